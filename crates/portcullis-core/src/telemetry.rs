//! The process-wide Prometheus recorder, shared by every component running
//! in one process (`portcullis dev` runs the IAM server and the gateway
//! together; each must see the other's metrics on `/metrics`).

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first use and returns its render handle.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ])
            // Only an empty bucket list is refused; the list above is not.
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        // Histogram samples accumulate until drained; without upkeep a
        // process that is never scraped grows without bound.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("prometheus-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
        // Another recorder may already be installed by an embedding program;
        // then metrics go there and this handle renders only its own.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Labels [`label`] keeps before it answers `"other"`.
pub const MAX_LABELS: usize = 4096;

/// A `'static` copy of a metric label drawn from a bounded set (route
/// templates and names, status codes), so recording a request allocates
/// nothing. Past [`MAX_LABELS`] distinct values it answers `"other"`, so an
/// unbounded input can never grow memory.
pub fn label(value: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::RwLock;
    static SEEN: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Ok(set) = seen.read()
        && let Some(s) = set.get(value)
    {
        return s;
    }
    let Ok(mut set) = seen.write() else {
        return "other";
    };
    if let Some(s) = set.get(value) {
        return s;
    }
    if set.len() >= MAX_LABELS {
        return "other";
    }
    let s: &'static str = Box::leak(value.to_owned().into_boxed_str());
    set.insert(s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_shared_and_bounded() {
        let a = label("route-a");
        assert!(std::ptr::eq(a, label(&String::from("route-a"))));
        for i in 0..MAX_LABELS + 10 {
            let _ = label(&format!("filler-{i}"));
        }
        assert_eq!(label("never-seen-before"), "other");
        assert!(std::ptr::eq(a, label("route-a")));
    }
}
