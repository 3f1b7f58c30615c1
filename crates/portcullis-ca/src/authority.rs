//! The CA itself: a root and an intermediate on disk, leaf issuance, CSR
//! signing, revocation and CRLs.

use crate::files::{create_private_dir, read_string, write_atomic};
use crate::state::{IssuedCert, Revocation, RevocationReason, State, hex, normalize_serial, unhex};
use crate::{CaError, ServiceName, SpiffeId, TrustDomain};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use portcullis_core::Secret;
use portcullis_core::crypto::MasterKey;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

/// The root certificate (the trust anchor services are given).
pub const ROOT_CERT: &str = "root.pem";
/// The root key, sealed with the master key.
pub const ROOT_KEY: &str = "root.key.sealed";
/// The intermediate certificate (it signs leaves and CRLs).
pub const INTERMEDIATE_CERT: &str = "intermediate.pem";
/// The intermediate key, sealed with the master key.
pub const INTERMEDIATE_KEY: &str = "intermediate.key.sealed";
/// The index of issued certificates and revocations.
pub const STATE_FILE: &str = "ca.json";
/// The latest CRL, signed by the intermediate.
pub const CRL_FILE: &str = "crl.pem";

/// Root lifetime.
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Intermediate lifetime.
const INTERMEDIATE_TTL: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// How far `not_before` is backdated, for clocks slightly behind ours.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Default leaf lifetime.
pub const DEFAULT_LEAF_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest leaf lifetime accepted: leaves are meant to be short-lived and
/// renewed, not revoked.
pub const MAX_LEAF_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// How long a CRL is valid (its `next_update`) unless the CA was given
/// another validity ([`Ca::set_crl_validity`]).
pub const CRL_VALIDITY: Duration = Duration::from_secs(3600);
/// Shortest CRL validity accepted: `serve-crl` re-signs at half of it, and
/// verifiers that poll the file need time to pick a new one up.
pub const MIN_CRL_VALIDITY: Duration = Duration::from_secs(5 * 60);
/// Longest CRL validity accepted: a revocation must not wait weeks to be
/// seen by a verifier that caches CRLs until their `nextUpdate`.
pub const MAX_CRL_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Whether `validity` is within [`MIN_CRL_VALIDITY`]..=[`MAX_CRL_VALIDITY`].
pub(crate) fn check_crl_validity(validity: Duration) -> Result<(), CaError> {
    if (MIN_CRL_VALIDITY..=MAX_CRL_VALIDITY).contains(&validity) {
        return Ok(());
    }
    Err(CaError::InvalidTtl(format!(
        "CRL validity must be between {} minutes and {} days",
        MIN_CRL_VALIDITY.as_secs() / 60,
        MAX_CRL_VALIDITY.as_secs() / 86_400
    )))
}

/// What a leaf certificate is for and how long it lives.
///
/// The default profile is what services need for mutual TLS: a SPIFFE URI
/// SAN, the given DNS SANs, `digitalSignature`, and both `serverAuth` and
/// `clientAuth` extended key usages.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    name: ServiceName,
    dns_sans: Vec<String>,
    ttl: Duration,
    client_auth: bool,
    spiffe_san: bool,
    validity: Option<(OffsetDateTime, OffsetDateTime)>,
}

impl LeafSpec {
    /// A leaf for `name` living `ttl` (see [`DEFAULT_LEAF_TTL`]). DNS names
    /// that parse as IP addresses become IP SANs.
    pub fn new(name: ServiceName, dns_sans: Vec<String>, ttl: Duration) -> Self {
        Self {
            name,
            dns_sans,
            ttl,
            client_auth: true,
            spiffe_san: true,
            validity: None,
        }
    }

    /// Only `serverAuth`: the certificate cannot authenticate as a client.
    pub fn server_only(mut self) -> Self {
        self.client_auth = false;
        self
    }

    /// Leaves out the SPIFFE URI SAN. Such a certificate still passes TLS
    /// verification but names no workload: authenticators must refuse it.
    /// For tests of exactly that.
    pub fn dangerous_without_spiffe_id(mut self) -> Self {
        self.spiffe_san = false;
        self
    }

    /// Sets the validity window exactly, ignoring the lifetime and the
    /// backdating; it may lie in the past or the future. For tests of
    /// expired and not-yet-valid certificates.
    pub fn dangerous_validity(
        mut self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Self {
        self.validity = Some((not_before, not_after));
        self
    }
}

/// A certificate just issued.
#[derive(Debug)]
pub struct IssuedLeaf {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// The workload's SPIFFE ID (also present when the SAN was left out).
    pub spiffe_id: SpiffeId,
    /// The leaf followed by the intermediate, PEM.
    pub chain_pem: String,
    /// The leaf's PKCS#8 private key, PEM; `None` when signed from a CSR.
    pub key_pem: Option<Secret>,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// A CRL just signed.
#[derive(Debug, Clone)]
pub struct Crl {
    /// PEM (`X509 CRL`).
    pub pem: String,
    /// Its `crlNumber`.
    pub number: u64,
    /// When a fresh one is due.
    pub next_update: OffsetDateTime,
}

/// An internal CA rooted in a directory (layout: [`ROOT_CERT`],
/// [`ROOT_KEY`], [`INTERMEDIATE_CERT`], [`INTERMEDIATE_KEY`], [`STATE_FILE`],
/// [`CRL_FILE`]).
pub struct Ca {
    dir: PathBuf,
    trust_domain: TrustDomain,
    root_pem: String,
    intermediate_pem: String,
    intermediate_not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
    /// Serialises read-modify-write of the state file.
    lock: Mutex<()>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a CA in `dir`: a self-signed root (10 years), an intermediate
    /// signed by it (2 years, path length 0), both keys sealed with
    /// `master_key`, an empty index and a first CRL. Refuses a directory that
    /// already holds a CA.
    pub fn init(
        dir: &Path,
        trust_domain: TrustDomain,
        master_key: &MasterKey,
    ) -> Result<Self, CaError> {
        Self::init_with_crl_validity(dir, trust_domain, master_key, CRL_VALIDITY)
    }

    /// [`Ca::init`], with CRLs valid `crl_validity` (see
    /// [`Ca::set_crl_validity`]) from the first one on. Refuses a validity
    /// out of bounds before anything is written.
    pub fn init_with_crl_validity(
        dir: &Path,
        trust_domain: TrustDomain,
        master_key: &MasterKey,
        crl_validity: Duration,
    ) -> Result<Self, CaError> {
        check_crl_validity(crl_validity)?;
        if dir.join(STATE_FILE).exists() {
            return Err(CaError::AlreadyInitialized(dir.to_owned()));
        }
        create_private_dir(dir)?;
        let now = OffsetDateTime::now_utc();

        let root_key = KeyPair::generate()?;
        let mut root = ca_params(
            &format!("Portcullis Root CA {trust_domain}"),
            1,
            now,
            ROOT_TTL,
        )?;
        root.use_authority_key_identifier_extension = false;
        let root_cert = root.self_signed(&root_key)?;
        let root_issuer = Issuer::from_params(&root, &root_key);

        let int_key = KeyPair::generate()?;
        let int = ca_params(
            &format!("Portcullis Intermediate CA {trust_domain}"),
            0,
            now,
            INTERMEDIATE_TTL,
        )?;
        let int_cert = int.signed_by(&int_key, &root_issuer)?;

        seal_key(master_key, &dir.join(ROOT_KEY), ROOT_KEY, &root_key)?;
        seal_key(
            master_key,
            &dir.join(INTERMEDIATE_KEY),
            INTERMEDIATE_KEY,
            &int_key,
        )?;
        write_atomic(&dir.join(ROOT_CERT), root_cert.pem().as_bytes(), 0o644)?;
        write_atomic(
            &dir.join(INTERMEDIATE_CERT),
            int_cert.pem().as_bytes(),
            0o644,
        )?;
        let mut state = State::new(&trust_domain);
        if crl_validity != CRL_VALIDITY {
            state.crl_validity_secs = Some(crl_validity.as_secs());
        }
        state.save(&dir.join(STATE_FILE), now.unix_timestamp())?;

        let ca = Self::open(dir, master_key)?;
        ca.crl()?;
        Ok(ca)
    }

    /// Opens the CA in `dir`, unsealing the intermediate key (the root key
    /// stays sealed: only `init` signs with it).
    pub fn open(dir: &Path, master_key: &MasterKey) -> Result<Self, CaError> {
        let state_path = dir.join(STATE_FILE);
        if !state_path.exists() {
            return Err(CaError::NotInitialized(dir.to_owned()));
        }
        let state = State::load(&state_path)?;
        let trust_domain = TrustDomain::parse(&state.trust_domain)
            .map_err(|e| CaError::corrupt(&state_path, e))?;
        let root_pem = read_string(&dir.join(ROOT_CERT))?;
        let int_path = dir.join(INTERMEDIATE_CERT);
        let intermediate_pem = read_string(&int_path)?;
        let int_key = unseal_key(master_key, &dir.join(INTERMEDIATE_KEY), INTERMEDIATE_KEY)?;
        let issuer = Issuer::from_ca_cert_pem(&intermediate_pem, int_key)
            .map_err(|e| CaError::corrupt(&int_path, e))?;
        let intermediate_not_after = cert_not_after(&intermediate_pem)
            .ok_or_else(|| CaError::corrupt(&int_path, "not a certificate"))?;
        Ok(Self {
            dir: dir.to_owned(),
            trust_domain,
            root_pem,
            intermediate_pem,
            intermediate_not_after,
            issuer,
            lock: Mutex::new(()),
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root certificate, PEM: the trust anchor to give services.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Writes what a service needs into `out_dir` (created if missing):
    /// `cert.pem` (leaf + intermediate), `ca.pem` (the root to trust) and,
    /// when the key was generated here, `key.pem` (0600).
    pub fn write_leaf(&self, leaf: &IssuedLeaf, out_dir: &Path) -> Result<(), CaError> {
        std::fs::create_dir_all(out_dir).map_err(CaError::io(out_dir))?;
        write_atomic(&out_dir.join("cert.pem"), leaf.chain_pem.as_bytes(), 0o644)?;
        write_atomic(&out_dir.join("ca.pem"), self.root_pem.as_bytes(), 0o644)?;
        if let Some(key) = &leaf.key_pem {
            write_atomic(&out_dir.join("key.pem"), key.expose().as_bytes(), 0o600)?;
        }
        Ok(())
    }

    /// Issues a leaf for `name` with a freshly generated P-256 key.
    pub fn issue(
        &self,
        name: ServiceName,
        dns_sans: Vec<String>,
        ttl: Duration,
    ) -> Result<IssuedLeaf, CaError> {
        self.issue_with(LeafSpec::new(name, dns_sans, ttl))
    }

    /// Issues a leaf described by `spec` with a freshly generated P-256 key.
    pub fn issue_with(&self, spec: LeafSpec) -> Result<IssuedLeaf, CaError> {
        let key = KeyPair::generate()?;
        let mut leaf = self.sign(&spec, &key)?;
        leaf.key_pem = Some(Secret::new(key.serialize_pem()));
        Ok(leaf)
    }

    /// Signs a certificate for `name` over the public key of a PKCS#10 CSR
    /// (PEM). The CSR's signature must verify (proof of possession); its
    /// subject, SANs, key usages and any other extension are ignored: the
    /// certificate carries ours.
    pub fn sign_csr(&self, csr_pem: &str, spec: LeafSpec) -> Result<IssuedLeaf, CaError> {
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        csr.verify_signature()
            .map_err(|e| CaError::BadCsr(format!("signature: {e}")))?;
        let public_key =
            SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
                .map_err(|e| CaError::BadCsr(format!("public key: {e}")))?;
        self.sign(&spec, &public_key)
    }

    fn sign(
        &self,
        spec: &LeafSpec,
        public_key: &impl rcgen::PublicKeyData,
    ) -> Result<IssuedLeaf, CaError> {
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = match spec.validity {
            Some(window) => window,
            None => {
                if spec.ttl.is_zero() || spec.ttl > MAX_LEAF_TTL {
                    return Err(CaError::InvalidTtl(format!(
                        "lifetime must be between 1 s and {} days",
                        MAX_LEAF_TTL.as_secs() / 86_400
                    )));
                }
                (now - BACKDATE, now + spec.ttl)
            }
        };
        if not_after > self.intermediate_not_after {
            return Err(CaError::InvalidTtl(format!(
                "the certificate would outlive the intermediate CA (expires {})",
                self.intermediate_not_after
            )));
        }
        let spiffe_id = SpiffeId::new(self.trust_domain.clone(), spec.name.clone());
        let serial = random_serial()?;

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, spec.name.as_str());
        if spec.spiffe_san {
            params.subject_alt_names.push(SanType::URI(
                spiffe_id
                    .to_string()
                    .try_into()
                    .map_err(|_| CaError::InvalidName(spiffe_id.to_string()))?,
            ));
        }
        for name in &spec.dns_sans {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    let bad = || CaError::InvalidName(format!("DNS name {name:?}"));
                    rustls_pki_types::DnsName::try_from(name.as_str()).map_err(|_| bad())?;
                    SanType::DnsName(name.as_str().try_into().map_err(|_| bad())?)
                }
            });
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if spec.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(public_key, &self.issuer)?;

        let serial = hex(&serial);
        self.update_state(|state| {
            state.issued.push(IssuedCert {
                serial: serial.clone(),
                name: spec.name.as_str().to_owned(),
                not_before: not_before.unix_timestamp(),
                not_after: not_after.unix_timestamp(),
                revoked: None,
            });
            Ok(())
        })?;
        Ok(IssuedLeaf {
            serial,
            spiffe_id,
            chain_pem: format!("{}{}", cert.pem(), self.intermediate_pem),
            key_pem: None,
            not_after,
        })
    }

    /// Records the revocation of `serial` (hex, `:` separators allowed) and
    /// publishes a fresh CRL.
    pub fn revoke(&self, serial: &str, reason: RevocationReason) -> Result<Crl, CaError> {
        let serial = normalize_serial(serial);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        self.update_state(|state| {
            let cert = state
                .issued
                .iter_mut()
                .find(|c| c.serial == serial)
                .ok_or_else(|| CaError::UnknownSerial(serial.clone()))?;
            if cert.revoked.is_some() {
                return Err(CaError::AlreadyRevoked(serial.clone()));
            }
            cert.revoked = Some(Revocation { at: now, reason });
            Ok(())
        })?;
        self.crl()
    }

    /// How long each CRL this CA signs is valid.
    pub fn crl_validity(&self) -> Result<Duration, CaError> {
        Ok(State::load(&self.dir.join(STATE_FILE))?.crl_validity())
    }

    /// Sets how long each CRL is valid (between [`MIN_CRL_VALIDITY`] and
    /// [`MAX_CRL_VALIDITY`]), kept in the index, and publishes a fresh CRL
    /// with it.
    pub fn set_crl_validity(&self, validity: Duration) -> Result<Crl, CaError> {
        check_crl_validity(validity)?;
        self.update_state(|state| {
            state.crl_validity_secs = Some(validity.as_secs());
            Ok(())
        })?;
        self.crl()
    }

    /// Signs a fresh CRL (valid [`Ca::crl_validity`]) listing every revoked
    /// certificate not yet expired, and writes it to [`CRL_FILE`].
    pub fn crl(&self) -> Result<Crl, CaError> {
        let now = OffsetDateTime::now_utc();
        self.update_state(|state| {
            let next_update = now + state.crl_validity();
            state.crl_number += 1;
            state.crl_next_update = next_update.unix_timestamp();
            let revoked_certs = state
                .issued
                .iter()
                .filter(|c| c.not_after > now.unix_timestamp())
                .filter_map(|c| Some((unhex(&c.serial)?, c.revoked.as_ref()?)))
                .map(|(serial, r)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial),
                    revocation_time: OffsetDateTime::from_unix_timestamp(r.at).unwrap_or(now),
                    reason_code: Some(r.reason.to_rcgen()),
                    invalidity_date: None,
                })
                .collect();
            let crl = CertificateRevocationListParams {
                this_update: now - BACKDATE,
                next_update,
                crl_number: SerialNumber::from(state.crl_number),
                issuing_distribution_point: None,
                revoked_certs,
                key_identifier_method: KeyIdMethod::Sha256,
            }
            .signed_by(&self.issuer)?;
            let pem = crl.pem()?;
            write_atomic(&self.dir.join(CRL_FILE), pem.as_bytes(), 0o644)?;
            Ok(Crl {
                pem,
                number: state.crl_number,
                next_update,
            })
        })
    }

    /// The current CRL, PEM, for serving over HTTP: the published one while
    /// more than half its validity remains, otherwise a fresh one.
    pub fn crl_pem(&self) -> Result<String, CaError> {
        let path = self.dir.join(CRL_FILE);
        let state = State::load(&self.dir.join(STATE_FILE))?;
        let fresh_until = state.crl_next_update - (state.crl_validity().as_secs() / 2) as i64;
        if OffsetDateTime::now_utc().unix_timestamp() < fresh_until
            && let Ok(pem) = read_string(&path)
        {
            return Ok(pem);
        }
        Ok(self.crl()?.pem)
    }

    /// The index of issued certificates, oldest first (entries go a week
    /// after the certificate expired).
    pub fn list(&self) -> Result<Vec<IssuedCert>, CaError> {
        Ok(State::load(&self.dir.join(STATE_FILE))?.issued)
    }

    fn update_state<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, CaError>,
    ) -> Result<T, CaError> {
        // A poisoned lock only means another thread panicked mid-update; the
        // file on disk is still whole (atomic writes), so carry on.
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // Other processes on the same directory (a `revoke` beside a running
        // `serve-crl`) wait too, so that none of them writes an index, or a
        // CRL, made from a state read before another's change.
        let _flock = crate::files::lock_dir(&self.dir)?;
        let path = self.dir.join(STATE_FILE);
        let mut state = State::load(&path)?;
        let out = f(&mut state)?;
        state.save(&path, OffsetDateTime::now_utc().unix_timestamp())?;
        Ok(out)
    }
}

/// Parameters of a CA certificate.
fn ca_params(
    cn: &str,
    path_len: u8,
    now: OffsetDateTime,
    ttl: Duration,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Portcullis");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    params.not_before = now - BACKDATE;
    params.not_after = now + ttl;
    Ok(params)
}

/// 16 random bytes, first bit clear (a positive INTEGER) and second set (no
/// leading zero byte to strip).
fn random_serial() -> Result<[u8; 16], CaError> {
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| CaError::Random)?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

fn seal_key(
    master_key: &MasterKey,
    path: &Path,
    context: &str,
    key: &KeyPair,
) -> Result<(), CaError> {
    let sealed = master_key
        .seal(context.as_bytes(), key.serialized_der())
        .map_err(|source| CaError::Sealed {
            path: path.to_owned(),
            source,
        })?;
    write_atomic(path, &sealed, 0o600)
}

fn unseal_key(master_key: &MasterKey, path: &Path, context: &str) -> Result<KeyPair, CaError> {
    let sealed = std::fs::read(path).map_err(CaError::io(path))?;
    let der = master_key
        .open(context.as_bytes(), &sealed)
        .map_err(|source| CaError::Sealed {
            path: path.to_owned(),
            source,
        })?;
    KeyPair::try_from(der).map_err(|e| CaError::corrupt(path, e))
}

/// `notAfter` of the first certificate in `pem`.
fn cert_not_after(pem: &str) -> Option<OffsetDateTime> {
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.validity().not_after.to_datetime())
}
