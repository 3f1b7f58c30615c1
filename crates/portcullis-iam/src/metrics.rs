//! Prometheus metrics. The recorder is process-global; it is installed once.

use metrics_exporter_prometheus::PrometheusHandle;

/// The process-wide recorder (installed on first use) and its render handle.
pub fn handle() -> &'static PrometheusHandle {
    portcullis_core::telemetry::prometheus()
}

/// Metric names, in one place.
pub mod names {
    /// Tokens issued, by grant and algorithm.
    pub const TOKENS_ISSUED: &str = "portcullis_iam_tokens_issued_total";
    /// Token-endpoint errors, by error code.
    pub const TOKEN_ERRORS: &str = "portcullis_iam_token_errors_total";
    /// Introspections, by result.
    pub const INTROSPECTIONS: &str = "portcullis_iam_introspections_total";
    /// Revocations recorded.
    pub const REVOCATIONS: &str = "portcullis_iam_revocations_total";
    /// HTTP requests, by listener, route and status.
    pub const HTTP_REQUESTS: &str = "portcullis_http_requests_total";
    /// HTTP request latency, by listener and route.
    pub const HTTP_DURATION: &str = "portcullis_http_request_duration_seconds";
    /// Client cache lookups, by hit/miss.
    pub const CLIENT_CACHE: &str = "portcullis_iam_client_cache_total";
    /// Password checks, by result (`accepted`/`refused` only: the metrics
    /// are public, so they must not tell unknown users from wrong passwords).
    pub const PASSWORD_CHECKS: &str = "portcullis_iam_password_checks_total";
    /// Sign-ins at the login form, by result (`succeeded`, `failed`,
    /// `throttled`).
    pub const LOGINS: &str = "portcullis_iam_logins_total";
    /// Grants revoked for a replayed code or refresh token, by reason.
    pub const REPLAYS: &str = "portcullis_iam_replays_total";
}
