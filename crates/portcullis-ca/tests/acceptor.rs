//! The shared TLS acceptor and HTTP accept loop: the peer certificate each
//! connection and request carries, self-signed admission, timeouts.

#![allow(clippy::unwrap_used)]

mod common;

use common::TestCa;
use portcullis_ca::tls::{
    AcceptError, Acceptor, ClientAuth, ClientIdentity, ClientTrust, client_config, serve,
};
use portcullis_ca::{PeerCertificate, Reloading, x5t_s256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A self-signed client certificate (rcgen) written as PEM files.
fn self_signed(dir: &Path, label: &str) -> (ClientIdentity, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec![format!("{label}.example")]).unwrap();
    let id = ClientIdentity {
        cert_chain: dir.join(format!("{label}.ss.pem")),
        key: dir.join(format!("{label}.ss.key")),
    };
    std::fs::write(&id.cert_chain, ck.cert.pem()).unwrap();
    std::fs::write(&id.key, ck.signing_key.serialize_pem()).unwrap();
    (id, ck.cert.der().clone())
}

fn acceptor(ca: &TestCa, client_auth: ClientAuth) -> Acceptor {
    Acceptor::new(Arc::new(
        Reloading::new(ca.server_files(client_auth)).unwrap(),
    ))
}

/// One handshake: the server's verdict.
async fn handshake(
    acceptor: &Acceptor,
    roots: &Path,
    id: Option<&ClientIdentity>,
) -> Result<Option<PeerCertificate>, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (roots, id) = (roots.to_owned(), id.cloned());
    let client =
        tokio::spawn(async move { common::client_handshake(addr, &roots, id.as_ref()).await });
    let (tcp, _) = listener.accept().await.unwrap();
    let outcome = match acceptor.accept(tcp).await {
        Ok((mut tls, peer)) => {
            let _ = tls.shutdown().await;
            Ok(peer)
        }
        Err(e) => Err(e.to_string()),
    };
    client.await.unwrap();
    outcome
}

#[tokio::test]
async fn a_ca_issued_client_certificate_is_verified_with_its_thumbprint() {
    let ca = TestCa::new();
    let acceptor = acceptor(&ca, ClientAuth::Required(ca.trust()));
    let (leaf, id) = ca.client("billing");
    let peer = handshake(&acceptor, &ca.root(), Some(&id))
        .await
        .unwrap()
        .unwrap();
    let der = CertificateDer::from_pem_slice(leaf.chain_pem.as_bytes()).unwrap();
    assert!(peer.chain_verified());
    assert_eq!(peer.x5t_s256(), x5t_s256(&der));
    assert_eq!(peer.leaf(), &der);
    assert_eq!(peer.chain().len(), 2, "leaf and intermediate as sent");
    assert_eq!(
        peer.identity().spiffe_id.unwrap().to_string(),
        "spiffe://test.portcullis/billing"
    );
}

#[tokio::test]
async fn self_signed_certificates_need_the_listener_to_admit_them() {
    let ca = TestCa::new();
    let (ss, der) = self_signed(ca.dir.path(), "app");
    let strict = acceptor(&ca, ClientAuth::Optional(ca.trust()));
    assert!(handshake(&strict, &ca.root(), Some(&ss)).await.is_err());

    let trust = ClientTrust {
        allow_self_signed: true,
        ..ca.trust()
    };
    let lenient = acceptor(&ca, ClientAuth::Optional(trust));
    let peer = handshake(&lenient, &ca.root(), Some(&ss))
        .await
        .unwrap()
        .unwrap();
    assert!(!peer.chain_verified(), "admitted without a chain");
    assert_eq!(peer.x5t_s256(), x5t_s256(&der));

    // CA-issued certificates still verify on that listener; a leaf from
    // another CA (not self-signed) is still refused.
    let (_, id) = ca.client("billing");
    let peer = handshake(&lenient, &ca.root(), Some(&id))
        .await
        .unwrap()
        .unwrap();
    assert!(peer.chain_verified());
    let other = TestCa::new();
    let (_, foreign) = other.client("billing");
    assert!(
        handshake(&lenient, &ca.root(), Some(&foreign))
            .await
            .is_err()
    );
    assert!(matches!(
        handshake(&lenient, &ca.root(), None).await,
        Ok(None)
    ));
}

#[tokio::test]
async fn an_expired_self_signed_certificate_is_refused() {
    let ca = TestCa::new();
    let mut params = rcgen::CertificateParams::new(vec!["old.example".into()]).unwrap();
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(3);
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let id = ClientIdentity {
        cert_chain: ca.dir.path().join("old.pem"),
        key: ca.dir.path().join("old.key"),
    };
    std::fs::write(&id.cert_chain, cert.pem()).unwrap();
    std::fs::write(&id.key, key.serialize_pem()).unwrap();
    let trust = ClientTrust {
        allow_self_signed: true,
        ..ca.trust()
    };
    let lenient = acceptor(&ca, ClientAuth::Optional(trust));
    assert!(handshake(&lenient, &ca.root(), Some(&id)).await.is_err());
}

#[tokio::test]
async fn a_silent_client_times_out() {
    let ca = TestCa::new();
    let acceptor =
        acceptor(&ca, ClientAuth::None).with_handshake_timeout(Duration::from_millis(100));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _silent = TcpStream::connect(addr).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    assert!(matches!(
        acceptor.accept(tcp).await,
        Err(AcceptError::Timeout)
    ));
}

/// `serve`: every request of a connection carries its peer certificate.
#[tokio::test]
async fn serve_puts_the_peer_certificate_into_each_request() {
    let ca = TestCa::new();
    let acceptor = acceptor(&ca, ClientAuth::Optional(ca.trust()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        acceptor,
        |peer_addr| {
            tower::service_fn(
                move |req: http::Request<hyper::body::Incoming>| async move {
                    let who = req
                        .extensions()
                        .get::<PeerCertificate>()
                        .map_or("none".to_owned(), |p| p.x5t_s256().to_owned());
                    assert!(peer_addr.ip().is_loopback());
                    Ok::<_, std::convert::Infallible>(http::Response::new(who))
                },
            )
        },
        async {
            let _ = stopped.await;
        },
    ));
    let get = |id: Option<ClientIdentity>| {
        let config = Arc::new(client_config(&ca.root(), id.as_ref()).unwrap());
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\nGET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            tls.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let (leaf, id) = ca.client("billing");
    let der = CertificateDer::from_pem_slice(leaf.chain_pem.as_bytes()).unwrap();
    let both = get(Some(id)).await;
    assert_eq!(both.matches(&x5t_s256(&der)).count(), 2, "{both}");
    let anonymous = get(None).await;
    assert_eq!(anonymous.matches("none").count(), 2, "{anonymous}");
    // Plain HTTP gets no HTTP answer.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf).await;
    assert!(!buf.starts_with(b"HTTP/"));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns after shutdown")
        .unwrap();
}

/// A small PKI of its own (rcgen): a root that signs a client leaf and a
/// CRL whose `nextUpdate` is `next_update_secs` from now (negative: past).
/// Returns the trust for a listener and the client's identity.
fn pki_with_crl(
    dir: &Path,
    label: &str,
    next_update_secs: i64,
    enforce_crl_expiry: bool,
) -> (ClientTrust, ClientIdentity) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams,
        ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
    };
    let now = time::OffsetDateTime::now_utc();
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::new(vec![]).unwrap();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = Issuer::from_params(&root, &root_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec![format!("{label}.example")]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    let next_update = now + time::Duration::seconds(next_update_secs);
    let crl = CertificateRevocationListParams {
        this_update: next_update - time::Duration::hours(2),
        next_update,
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap();

    let file = |name: &str, body: String| {
        let p = dir.join(format!("{label}.{name}"));
        std::fs::write(&p, body).unwrap();
        p
    };
    let trust = ClientTrust {
        enforce_crl_expiry,
        ..ClientTrust::new(
            file("root.pem", root_cert.pem()),
            vec![file("crl.pem", crl.pem().unwrap())],
        )
    };
    let id = ClientIdentity {
        cert_chain: file("leaf.pem", leaf_cert.pem()),
        key: file("leaf.key", leaf_key.serialize_pem()),
    };
    (trust, id)
}

#[tokio::test]
async fn a_crl_past_its_next_update_refuses_clients_only_when_enforced() {
    let ca = TestCa::new();
    let dir = ca.dir.path();
    let cases = [
        // (CRL's nextUpdate from now, enforced, the handshake succeeds)
        (-3600, false, true), // default: a stale CRL is still applied, nobody is locked out
        (-3600, true, false), // enforced: fail closed
        (3600, true, true),   // enforced with a fresh CRL
        (3600, false, true),
    ];
    for (n, (offset, enforce, admitted)) in cases.into_iter().enumerate() {
        let (trust, id) = pki_with_crl(dir, &format!("c{n}"), offset, enforce);
        let acceptor = acceptor(&ca, ClientAuth::Required(trust));
        let outcome = handshake(&acceptor, &ca.root(), Some(&id)).await;
        assert_eq!(
            outcome.is_ok(),
            admitted,
            "nextUpdate {offset:+} s, enforced {enforce}: {outcome:?}"
        );
        if !admitted {
            let e = outcome.unwrap_err();
            assert!(
                e.to_lowercase().contains("expired") || e.contains("ExpiredRevocationList"),
                "{e}"
            );
        }
    }
}
