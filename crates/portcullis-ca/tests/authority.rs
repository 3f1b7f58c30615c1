//! The CA on disk: what it writes, what it issues, CSRs, revocation.

#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine;
use common::{TestCa, master_key, name};
use portcullis_ca::Ca;
use portcullis_ca::{
    CaError, DEFAULT_LEAF_TTL, INTERMEDIATE_CERT, INTERMEDIATE_KEY, LeafSpec, ROOT_KEY,
    RevocationReason, STATE_FILE, TrustDomain,
};
use portcullis_core::crypto::MasterKey;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::X509Certificate;

fn parse(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .unwrap()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::URI(u) => format!("URI:{u}"),
                    GeneralName::DNSName(d) => format!("DNS:{d}"),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn leaves_carry_the_profile() {
    let ca = TestCa::new();
    let leaf = ca
        .ca
        .issue(
            name("billing"),
            vec!["billing.internal".into(), "127.0.0.1".into()],
            DEFAULT_LEAF_TTL,
        )
        .unwrap();
    let chain = parse(&leaf.chain_pem);
    assert_eq!(chain.len(), 2, "leaf + intermediate");
    let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let san = sans(&cert);
    assert_eq!(san[0], "URI:spiffe://test.portcullis/billing");
    assert_eq!(san[1], "DNS:billing.internal");
    assert!(san[2].contains("IPAddress"), "{san:?}");
    assert!(!cert.is_ca());
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let validity = cert.validity();
    let secs = (validity.not_after - validity.not_before)
        .unwrap()
        .whole_seconds();
    assert!((24 * 3600..=24 * 3600 + 600).contains(&secs), "{secs}");
    assert_eq!(cert.raw_serial_as_string().replace(':', ""), leaf.serial);

    let (_, int) = x509_parser::parse_x509_certificate(&chain[1]).unwrap();
    let bc = int.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = int.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
}

#[test]
fn csr_signed_certificate_carries_our_names_not_the_csrs() {
    let ca = TestCa::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://test.portcullis/admin".try_into().unwrap(),
    ));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let leaf = ca
        .ca
        .sign_csr(
            &csr,
            LeafSpec::new(
                name("billing"),
                vec!["billing.internal".into()],
                DEFAULT_LEAF_TTL,
            ),
        )
        .unwrap();
    assert!(leaf.key_pem.is_none(), "the key stays with the service");
    let chain = parse(&leaf.chain_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    assert_eq!(
        sans(&cert),
        [
            "URI:spiffe://test.portcullis/billing",
            "DNS:billing.internal"
        ]
    );
    assert!(!cert.is_ca());
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw(),
        "the CSR's key is certified"
    );
}

#[test]
fn tampered_csr_is_refused() {
    let ca = TestCa::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec![])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let mut der = csr.der().to_vec();
    let last = der.len() - 1;
    der[last] ^= 1;
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    );
    let spec = LeafSpec::new(name("billing"), vec![], DEFAULT_LEAF_TTL);
    assert!(matches!(
        ca.ca.sign_csr(&pem, spec.clone()),
        Err(CaError::BadCsr(_))
    ));
    assert!(matches!(
        ca.ca.sign_csr("garbage", spec),
        Err(CaError::BadCsr(_))
    ));
}

#[test]
fn keys_on_disk_are_sealed_and_private() {
    let ca = TestCa::new();
    for file in [ROOT_KEY, INTERMEDIATE_KEY] {
        let path = ca.ca.dir().join(file);
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(10).any(|w| w == b"-----BEGIN"),
            "{file} is PEM"
        );
        assert!(
            rcgen::KeyPair::try_from(bytes.as_slice()).is_err(),
            "{file} parses as a plaintext PKCS#8 key"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ca.ca.dir().join(STATE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn open_needs_the_right_master_key_and_init_refuses_an_existing_ca() {
    let ca = TestCa::new();
    let wrong = MasterKey::from_bytes(&[1; 32]).unwrap();
    assert!(matches!(
        Ca::open(ca.ca.dir(), &wrong),
        Err(CaError::Sealed { .. })
    ));
    let reopened = Ca::open(ca.ca.dir(), &master_key()).unwrap();
    assert_eq!(reopened.trust_domain().as_str(), "test.portcullis");
    assert_eq!(reopened.root_pem(), ca.ca.root_pem());
    assert!(matches!(
        Ca::init(
            ca.ca.dir(),
            TrustDomain::parse("other").unwrap(),
            &master_key()
        ),
        Err(CaError::AlreadyInitialized(_))
    ));
    assert!(matches!(
        Ca::open(&ca.dir.path().join("nothing"), &master_key()),
        Err(CaError::NotInitialized(_))
    ));
    // The intermediate on disk is what leaves chain to.
    let int = std::fs::read_to_string(ca.ca.dir().join(INTERMEDIATE_CERT)).unwrap();
    let leaf = reopened
        .issue(name("billing"), vec![], DEFAULT_LEAF_TTL)
        .unwrap();
    assert!(leaf.chain_pem.ends_with(&int));
}

#[test]
fn revocation_is_indexed_and_listed() {
    let ca = TestCa::new();
    let a = ca.ca.issue(name("a"), vec![], DEFAULT_LEAF_TTL).unwrap();
    let b = ca.ca.issue(name("b"), vec![], DEFAULT_LEAF_TTL).unwrap();
    // Operators may paste serials with colons and in upper case.
    let typed: Vec<String> = a
        .serial
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect();
    let crl = ca
        .ca
        .revoke(&typed.join(":"), RevocationReason::KeyCompromise)
        .unwrap();
    assert!(crl.pem.starts_with("-----BEGIN X509 CRL-----"));
    assert!(matches!(
        ca.ca.revoke(&a.serial, RevocationReason::KeyCompromise),
        Err(CaError::AlreadyRevoked(_))
    ));
    assert!(matches!(
        ca.ca.revoke("00ff", RevocationReason::Unspecified),
        Err(CaError::UnknownSerial(_))
    ));
    let list = ca.ca.list().unwrap();
    let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"a") && names.contains(&"b") && !names.contains(&"iam"));
    let entry_a = list.iter().find(|c| c.serial == a.serial).unwrap();
    assert_eq!(
        entry_a.revoked.as_ref().unwrap().reason,
        RevocationReason::KeyCompromise
    );
    assert!(
        list.iter()
            .find(|c| c.serial == b.serial)
            .unwrap()
            .revoked
            .is_none()
    );

    // The CRL names exactly the revoked serial, and numbers increase.
    let der =
        rustls_pki_types::CertificateRevocationListDer::from_pem_slice(crl.pem.as_bytes()).unwrap();
    let (_, parsed) = x509_parser::parse_x509_crl(&der).unwrap();
    let serials: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|r| r.raw_serial_as_string().replace(':', ""))
        .collect();
    assert_eq!(serials, vec![a.serial.clone()]);
    let next = ca.ca.crl().unwrap();
    assert!(next.number > crl.number);
    assert_eq!(
        ca.ca.crl_pem().unwrap(),
        next.pem,
        "fresh CRL is served as is"
    );
}

/// The `nextUpdate` of a CRL in PEM, Unix seconds.
fn next_update(pem: &str) -> i64 {
    let der =
        rustls_pki_types::CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, parsed) = x509_parser::parse_x509_crl(&der).unwrap();
    parsed.next_update().unwrap().timestamp()
}

#[test]
fn the_crl_validity_is_kept_in_the_index_and_bounded() {
    use portcullis_ca::{CRL_VALIDITY, MAX_CRL_VALIDITY, MIN_CRL_VALIDITY};
    use std::time::Duration;
    let ca = TestCa::new();
    let now = || time::OffsetDateTime::now_utc().unix_timestamp();
    // A new CA signs for the default hour.
    assert_eq!(ca.ca.crl_validity().unwrap(), CRL_VALIDITY);
    let first = std::fs::read_to_string(ca.crl()).unwrap();
    assert!((next_update(&first) - now() - 3600).abs() <= 5);

    let six_hours = Duration::from_secs(6 * 3600);
    let crl = ca.ca.set_crl_validity(six_hours).unwrap();
    assert!((crl.next_update.unix_timestamp() - now() - 6 * 3600).abs() <= 5);
    assert_eq!(next_update(&crl.pem), crl.next_update.unix_timestamp());
    assert_eq!(std::fs::read_to_string(ca.crl()).unwrap(), crl.pem);

    // Kept: the next CRL, also from a reopened CA, has the same validity.
    let reopened = Ca::open(ca.ca.dir(), &master_key()).unwrap();
    assert_eq!(reopened.crl_validity().unwrap(), six_hours);
    let again = reopened.crl().unwrap();
    assert!(again.number > crl.number);
    assert!((again.next_update.unix_timestamp() - now() - 6 * 3600).abs() <= 5);
    // Served as is while more than half of the six hours remain, re-signed
    // once less does (the default hour's half would still serve both).
    assert_eq!(reopened.crl_pem().unwrap(), again.pem);
    let state_path = ca.ca.dir().join(STATE_FILE);
    let set_next_update = |at: i64| {
        let mut state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
        state["crl_next_update"] = at.into();
        std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    };
    set_next_update(now() + 4 * 3600);
    assert_eq!(reopened.crl_pem().unwrap(), again.pem, "4 h of 6 left");
    set_next_update(now() + 2 * 3600);
    let served = reopened.crl_pem().unwrap();
    assert_ne!(served, again.pem, "2 h of 6 left: a fresh one");
    assert!((next_update(&served) - now() - 6 * 3600).abs() <= 5);
    let again = Ca::open(ca.ca.dir(), &master_key()).unwrap().crl().unwrap();

    // Out of bounds is refused, and nothing changes.
    for bad in [
        Duration::ZERO,
        MIN_CRL_VALIDITY - Duration::from_secs(1),
        MAX_CRL_VALIDITY + Duration::from_secs(1),
    ] {
        assert!(
            matches!(ca.ca.set_crl_validity(bad), Err(CaError::InvalidTtl(_))),
            "{bad:?}"
        );
    }
    assert_eq!(ca.ca.crl_validity().unwrap(), six_hours);
    assert_eq!(std::fs::read_to_string(ca.crl()).unwrap(), again.pem);
    ca.ca.set_crl_validity(MIN_CRL_VALIDITY).unwrap();
    ca.ca.set_crl_validity(MAX_CRL_VALIDITY).unwrap();
}

#[test]
fn an_index_written_before_the_crl_validity_could_be_set_keeps_the_default() {
    let ca = TestCa::new();
    let path = ca.ca.dir().join(STATE_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("crl_validity_secs"), "absent until set");
    ca.ca
        .set_crl_validity(std::time::Duration::from_secs(600))
        .unwrap();
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("\"crl_validity_secs\": 600")
            || std::fs::read_to_string(&path)
                .unwrap()
                .contains("\"crl_validity_secs\":600")
    );
    std::fs::write(&path, &text).unwrap();
    assert_eq!(ca.ca.crl_validity().unwrap(), portcullis_ca::CRL_VALIDITY);
    // A hand-edited value out of bounds is a damaged index, not a CRL born
    // expired or a clock overflow.
    for bad in ["1", "18446744073709551615"] {
        let edited = text.replacen(
            "\"issued\"",
            &format!("\"crl_validity_secs\": {bad},\n  \"issued\""),
            1,
        );
        assert!(edited.contains("crl_validity_secs"));
        std::fs::write(&path, edited).unwrap();
        assert!(matches!(ca.ca.crl(), Err(CaError::Corrupt { .. })), "{bad}");
        assert!(matches!(ca.ca.crl_pem(), Err(CaError::Corrupt { .. })));
    }
}

#[test]
fn a_ca_can_be_made_with_another_crl_validity() {
    let tmp = tempfile::tempdir().unwrap();
    let td = || TrustDomain::parse("td.example").unwrap();
    let dir = tmp.path().join("short");
    assert!(matches!(
        Ca::init_with_crl_validity(
            &dir,
            td(),
            &master_key(),
            std::time::Duration::from_secs(60)
        ),
        Err(CaError::InvalidTtl(_))
    ));
    assert!(!dir.exists(), "nothing written");
    let ca = Ca::init_with_crl_validity(
        &dir,
        td(),
        &master_key(),
        std::time::Duration::from_secs(2 * 3600),
    )
    .unwrap();
    // The very first CRL already has it.
    let first = std::fs::read_to_string(dir.join(portcullis_ca::CRL_FILE)).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((next_update(&first) - now - 2 * 3600).abs() <= 5);
    assert_eq!(
        ca.crl_validity().unwrap(),
        std::time::Duration::from_secs(2 * 3600)
    );
}

#[test]
fn lifetimes_are_checked() {
    let ca = TestCa::new();
    assert!(matches!(
        ca.ca.issue(name("a"), vec![], std::time::Duration::ZERO),
        Err(CaError::InvalidTtl(_))
    ));
    assert!(matches!(
        ca.ca.issue(
            name("a"),
            vec![],
            std::time::Duration::from_secs(5 * 365 * 24 * 3600)
        ),
        Err(CaError::InvalidTtl(_))
    ));
    assert!(matches!(
        ca.ca
            .issue(name("a"), vec!["bad name!".into()], DEFAULT_LEAF_TTL),
        Err(CaError::InvalidName(_))
    ));
}
