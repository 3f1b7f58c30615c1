//! Certificate renewal over mutual TLS: the CA's endpoint
//! ([`renewal_router`], served by `portcullis ca serve`) and the service's
//! side ([`CertRenewer`]).
//!
//! ```text
//! service ── mTLS, current leaf ──► POST /v1/renew   (body: CSR PEM for a new key)
//!         ◄── 200 application/pem-certificate-chain (same SPIFFE ID and DNS SANs)
//! ```
//!
//! The caller is whoever rustls verified (chain, validity, CRL); the new
//! certificate's identity is copied from that certificate, never from the
//! CSR ([`portcullis_ca::Ca::renew`]). The renewer makes a fresh key per
//! renewal, writes key then certificate atomically, and everything that
//! follows the files ([`crate::tls::serve_tls`], [`ClientTls`]) picks them up.

use crate::tls::{ClientIdentity, ClientTls};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis_ca::{Ca, CaError, PeerCertificate};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The renewal path.
pub const RENEW_PATH: &str = "/v1/renew";

/// Largest CSR accepted (bytes).
const MAX_CSR_BYTES: usize = 16 * 1024;

fn error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// `POST /v1/renew` for `ca`, issuing certificates living `ttl`. Serve it
/// over TLS with *required* client certificates checked against the CA's
/// root and CRL ([`crate::tls::serve_tls`]). Answers:
///
/// - 200 `application/pem-certificate-chain`: the new leaf and intermediate;
/// - 401 `client_certificate_required`: no client certificate;
/// - 403 `renewal_refused`: revoked, unknown to this CA, expired, or no
///   SPIFFE ID in the trust domain;
/// - 400 `invalid_request`: the body is not a CSR with a valid signature.
pub fn renewal_router(ca: Arc<Ca>, ttl: Duration) -> axum::Router {
    axum::Router::new()
        .route(RENEW_PATH, axum::routing::post(renew))
        .layer(DefaultBodyLimit::max(MAX_CSR_BYTES))
        .with_state((ca, ttl))
}

async fn renew(
    State((ca, ttl)): State<(Arc<Ca>, Duration)>,
    peer: Option<axum::Extension<PeerCertificate>>,
    csr: String,
) -> Response {
    let Some(axum::Extension(peer)) = peer else {
        return error(
            StatusCode::UNAUTHORIZED,
            "client_certificate_required",
            "renewal needs the current certificate in the TLS handshake",
        );
    };
    let outcome = tokio::task::spawn_blocking(move || ca.renew(&peer, &csr, ttl)).await;
    match outcome {
        Ok(Ok(leaf)) => {
            tracing::info!(spiffe_id = %leaf.spiffe_id, serial = %leaf.serial, "certificate renewed");
            (
                [
                    (header::CONTENT_TYPE, "application/pem-certificate-chain"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                leaf.chain_pem,
            )
                .into_response()
        }
        Ok(Err(CaError::RenewalRefused(why))) => {
            tracing::warn!(reason = %why, "renewal refused");
            error(StatusCode::FORBIDDEN, "renewal_refused", &why)
        }
        Ok(Err(e @ (CaError::BadCsr(_) | CaError::InvalidName(_)))) => {
            error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string())
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "renewal failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "renewal failed",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "renewal task failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "renewal failed",
            )
        }
    }
}

/// Why a renewal did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenewError {
    /// The CA refused (revoked, unknown certificate, bad CSR): not retried
    /// until the certificate changes.
    #[error("the CA refused the renewal: {0}")]
    Refused(String),
    /// The CA could not be reached or failed; retried.
    #[error("renewal endpoint unavailable: {0}")]
    Unavailable(String),
    /// A local file could not be read or written, or key generation failed.
    #[error("{0}")]
    Local(String),
}

/// Renews this service's certificate at about two thirds of its lifetime
/// through the CA's renewal endpoint, authenticating with the current one.
pub struct CertRenewer {
    url: String,
    files: ClientIdentity,
    tls: Arc<ClientTls>,
}

impl std::fmt::Debug for CertRenewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertRenewer")
            .field("url", &self.url)
            .field("cert", &self.files.cert_chain)
            .finish()
    }
}

impl CertRenewer {
    /// Renews the certificate in `files` at `url` (the CA's
    /// `https://…/v1/renew`), calling it with `tls` (a [`ClientTls`] over
    /// the same files and the CA's root).
    pub fn new(url: impl Into<String>, files: ClientIdentity, tls: Arc<ClientTls>) -> Self {
        Self {
            url: url.into(),
            files,
            tls,
        }
    }

    /// When the current certificate is due: two thirds into its lifetime
    /// (`Duration::ZERO` if that has passed).
    pub fn due_in(&self) -> Result<Duration, RenewError> {
        let pem = std::fs::read(&self.files.cert_chain)
            .map_err(|e| RenewError::Local(format!("{}: {e}", self.files.cert_chain.display())))?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
            .map_err(|e| RenewError::Local(format!("certificate PEM: {e}")))?;
        let cert = pem
            .parse_x509()
            .map_err(|e| RenewError::Local(format!("certificate: {e}")))?;
        let nb = cert.validity().not_before.timestamp();
        let na = cert.validity().not_after.timestamp();
        let due = nb + (na - nb) * 2 / 3;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Ok(Duration::from_secs(u64::try_from(due - now).unwrap_or(0)))
    }

    /// Renews now: a fresh P-256 key and CSR, the call, then key and
    /// certificate written atomically (key first) and the client reloaded.
    pub async fn renew_now(&self) -> Result<(), RenewError> {
        let key = rcgen::KeyPair::generate().map_err(|e| RenewError::Local(e.to_string()))?;
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .and_then(|c| c.pem())
            .map_err(|e| RenewError::Local(e.to_string()))?;
        let resp = self
            .tls
            .client()
            .post(&self.url)
            .header(header::CONTENT_TYPE, "application/pkcs10")
            .body(csr)
            .send()
            .await
            .map_err(|e| RenewError::Unavailable(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| RenewError::Unavailable(e.to_string()))?;
        if status.is_server_error() {
            return Err(RenewError::Unavailable(format!("status {status}")));
        }
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            return Err(RenewError::Refused(
                v["error_description"]
                    .as_str()
                    .or(v["error"].as_str())
                    .unwrap_or("refused")
                    .to_owned(),
            ));
        }
        if !body.contains("-----BEGIN CERTIFICATE-----") {
            return Err(RenewError::Unavailable(
                "the answer holds no certificate".into(),
            ));
        }
        let key_pem = portcullis_core::Secret::new(key.serialize_pem());
        write_atomic(&self.files.key, key_pem.expose().as_bytes(), 0o600)?;
        write_atomic(&self.files.cert_chain, body.as_bytes(), 0o644)?;
        // Pick the new pair up now rather than at the next poll.
        if let Err(e) = self.tls.reload_if_changed() {
            tracing::warn!(error = %e, "renewed certificate did not load yet");
        }
        Ok(())
    }

    /// Renews whenever due, forever; failures are logged and retried after
    /// `retry` (a refusal too: the operator may fix it). Spawn it.
    pub async fn run(self: Arc<Self>, retry: Duration) {
        loop {
            let wait = match self.due_in() {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the certificate to renew");
                    retry
                }
            };
            tokio::time::sleep(wait).await;
            if self.due_in().is_ok_and(|d| d.is_zero()) {
                match self.renew_now().await {
                    Ok(()) => {
                        tracing::info!(cert = %self.files.cert_chain.display(), "certificate renewed")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "certificate renewal failed; retrying");
                        tokio::time::sleep(retry).await;
                    }
                }
            }
        }
    }
}

/// Writes through a temporary file and a rename (the CA crate's writer).
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), RenewError> {
    portcullis_ca::write_atomic(path, bytes, mode).map_err(|e| RenewError::Local(e.to_string()))
}
