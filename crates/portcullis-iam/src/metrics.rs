//! Prometheus metrics. The recorder is process-global; it is installed once.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder (first call) and returns the render handle.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ])
            // Only the bucket list is validated; the one above is non-empty.
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program);
        // then our metrics go there and /metrics renders only what we hold.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
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
}
