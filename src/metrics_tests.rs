//! The exposition of every registered metric.

use super::*;

#[test]
fn every_metric_registers_and_renders_with_the_prefix() {
    let m = Metrics::new().unwrap();
    m.requests.with_label_values(&["manifest", "200"]).inc();
    m.cache_bytes.set(5);
    m.cache_budget_bytes.set(10);
    m.request_seconds
        .with_label_values(&["manifest"])
        .observe(0.001);
    m.verification_seconds.observe(0.001);
    m.cache_evictions.inc();
    m.connections_open.with_label_values(&["registry"]).set(1);
    m.connections_closed
        .with_label_values(&["registry", "idle"])
        .inc();
    m.send_timeouts.with_label_values(&["registry"]).inc();
    m.password_checks_refused
        .with_label_values(&["backoff"])
        .inc();
    m.trust_available.with_label_values(&["acme"]).set(1);
    let text = String::from_utf8(m.render()).unwrap();
    for name in [
        "portcullis_requests_total",
        "portcullis_cache_bytes",
        "portcullis_cache_budget_bytes",
        "portcullis_request_duration_seconds",
        "portcullis_verification_duration_seconds",
        "portcullis_cache_evictions_total",
        "portcullis_connections_open",
        "portcullis_connections_closed_total",
        "portcullis_send_timeouts_total",
        "portcullis_password_checks_refused_total",
        "portcullis_ready",
        "portcullis_trust_degraded",
        "portcullis_trust_available",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    assert!(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| l.starts_with("portcullis_") || l.starts_with("process_"))
    );
    let build = format!(
        "portcullis_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.lines().any(|l| l == build), "{build} missing");
}

#[cfg(target_os = "linux")]
#[test]
fn process_metrics_are_exported() {
    let text = String::from_utf8(Metrics::new().unwrap().render()).unwrap();
    for name in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
}
