//! Real TLS handshakes over loopback against an mTLS listener built from the
//! CA's files: who gets in and who does not.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, TestCa, name};
use portcullis_ca::tls::ClientAuth;
use portcullis_ca::{
    DEFAULT_LEAF_TTL, LeafSpec, OffsetDateTime, RevocationReason, TrustDomain, x5t_s256,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::time::Duration;

const DAY: time::Duration = time::Duration::days(1);

fn refused(outcome: &common::Outcome) -> bool {
    outcome.is_err()
}

#[tokio::test]
async fn valid_leaf_is_accepted_and_names_its_workload() {
    let (ca, mut server) = common::mtls_server().await;
    let (leaf, id) = ca.client("billing");
    let peer = server
        .connect(&ca.root(), Some(&id))
        .await
        .unwrap()
        .expect("a client certificate");
    let td = TrustDomain::parse(common::TRUST_DOMAIN).unwrap();
    assert_eq!(
        peer.workload_in(&td).unwrap().to_string(),
        "spiffe://test.portcullis/billing"
    );
    assert!(
        peer.workload_in(&TrustDomain::parse("other").unwrap())
            .is_none()
    );
    let der = CertificateDer::from_pem_slice(leaf.chain_pem.as_bytes()).unwrap();
    assert_eq!(peer.thumbprint, x5t_s256(&der));
    assert_eq!(peer.thumbprint.len(), 43, "base64url of 32 bytes");
}

#[tokio::test]
async fn expired_leaf_is_refused() {
    let (ca, mut server) = common::mtls_server().await;
    let now = OffsetDateTime::now_utc();
    let (_, id) = ca.leaf(
        "expired",
        LeafSpec::new(name("billing"), vec![], DEFAULT_LEAF_TTL)
            .dangerous_validity(now - 2 * DAY, now - DAY),
    );
    let outcome = server.connect(&ca.root(), Some(&id)).await;
    assert!(refused(&outcome), "{outcome:?}");
    assert!(outcome.unwrap_err().contains("xpired"));
}

#[tokio::test]
async fn not_yet_valid_leaf_is_refused() {
    let (ca, mut server) = common::mtls_server().await;
    let now = OffsetDateTime::now_utc();
    let (_, id) = ca.leaf(
        "future",
        LeafSpec::new(name("billing"), vec![], DEFAULT_LEAF_TTL)
            .dangerous_validity(now + DAY, now + 2 * DAY),
    );
    let outcome = server.connect(&ca.root(), Some(&id)).await;
    assert!(refused(&outcome), "{outcome:?}");
}

#[tokio::test]
async fn leaf_from_another_ca_is_refused() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let mut server = Server::start(ca.server_files(ClientAuth::Required(ca.trust()))).await;
    let (_, id) = other.client("billing");
    let outcome = server.connect(&ca.root(), Some(&id)).await;
    assert!(refused(&outcome), "{outcome:?}");
    let err = outcome.unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("BadSignature"),
        "{err}"
    );
}

#[tokio::test]
async fn revoked_leaf_is_refused_after_reload() {
    let (ca, mut server) = common::mtls_server().await;
    let (leaf, id) = ca.client("billing");
    let (_, bystander) = ca.client("orders");
    assert!(server.connect(&ca.root(), Some(&id)).await.is_ok());

    ca.ca
        .revoke(&leaf.serial, RevocationReason::KeyCompromise)
        .unwrap();
    server.reloading.reload().unwrap();

    let outcome = server.connect(&ca.root(), Some(&id)).await;
    assert!(refused(&outcome), "{outcome:?}");
    assert!(outcome.unwrap_err().contains("Revoked"));
    assert!(
        server.connect(&ca.root(), Some(&bystander)).await.is_ok(),
        "other certificates still work"
    );
}

#[tokio::test]
async fn crl_update_is_picked_up_without_restart() {
    let (ca, mut server) = common::mtls_server().await;
    let watcher = server.reloading.watch(Duration::from_millis(50));
    let (leaf, id) = ca.client("billing");
    assert!(server.connect(&ca.root(), Some(&id)).await.is_ok());

    ca.ca
        .revoke(&leaf.serial, RevocationReason::Superseded)
        .unwrap();
    // The watcher polls; wait (bounded) until a connection is refused.
    let mut outcome = Ok(None);
    for _ in 0..400 {
        outcome = server.connect(&ca.root(), Some(&id)).await;
        if outcome.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    watcher.abort();
    assert!(
        outcome.as_ref().is_err_and(|e| e.contains("Revoked")),
        "the republished CRL was never picked up: {outcome:?}"
    );
}

#[tokio::test]
async fn bad_crl_file_keeps_the_running_configuration() {
    let (ca, mut server) = common::mtls_server().await;
    let (_, id) = ca.client("billing");
    std::fs::write(ca.crl(), "not a CRL").unwrap();
    assert!(server.reloading.reload().is_err());
    assert!(
        !server.reloading.reload_if_changed().unwrap(),
        "reported once"
    );
    assert!(server.connect(&ca.root(), Some(&id)).await.is_ok());
}

#[tokio::test]
async fn leaf_without_client_auth_usage_is_refused() {
    let (ca, mut server) = common::mtls_server().await;
    let (_, id) = ca.leaf(
        "server-only",
        LeafSpec::new(name("billing"), vec![], DEFAULT_LEAF_TTL).server_only(),
    );
    let outcome = server.connect(&ca.root(), Some(&id)).await;
    assert!(refused(&outcome), "{outcome:?}");
}

/// TLS accepts it (our CA issued it); the mTLS authenticator must refuse a
/// peer whose `spiffe_id` is `None`.
#[tokio::test]
async fn leaf_without_spiffe_san_passes_tls_but_names_no_workload() {
    let (ca, mut server) = common::mtls_server().await;
    let (_, id) = ca.leaf(
        "anonymous",
        LeafSpec::new(
            name("billing"),
            vec!["billing.internal".into()],
            DEFAULT_LEAF_TTL,
        )
        .dangerous_without_spiffe_id(),
    );
    let peer = server
        .connect(&ca.root(), Some(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(peer.spiffe_id, None);
    assert_eq!(peer.thumbprint.len(), 43);
}

#[tokio::test]
async fn plain_tcp_to_the_mtls_listener_fails() {
    let (_ca, mut server) = common::mtls_server().await;
    let outcome = server.connect_plain().await;
    assert!(refused(&outcome), "{outcome:?}");
}

#[tokio::test]
async fn tls_client_without_certificate_is_refused() {
    let (ca, mut server) = common::mtls_server().await;
    let outcome = server.connect(&ca.root(), None).await;
    assert!(refused(&outcome), "{outcome:?}");
}

#[tokio::test]
async fn optional_client_auth_admits_both_and_still_checks_certificates() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let mut server = Server::start(ca.server_files(ClientAuth::Optional(ca.trust()))).await;
    assert_eq!(server.connect(&ca.root(), None).await, Ok(None));
    let (_, id) = ca.client("billing");
    let peer = server
        .connect(&ca.root(), Some(&id))
        .await
        .unwrap()
        .unwrap();
    assert!(peer.spiffe_id.is_some());
    let (_, foreign) = other.client("billing");
    assert!(refused(&server.connect(&ca.root(), Some(&foreign)).await));
}

#[tokio::test]
async fn server_only_tls_listener_ignores_client_certificates() {
    let ca = TestCa::new();
    let mut server = Server::start(ca.server_files(ClientAuth::None)).await;
    assert_eq!(server.connect(&ca.root(), None).await, Ok(None));
}
