//! Every Prometheus metric Portcullis exports, in one registry that is
//! passed in, never global. Label values come only from fixed sets or from
//! the config (upstream and policy names), never from a request.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// How a pull decision went: the `decision` label of
/// `portcullis_pull_decisions_total` and of the audit log's decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    /// Allowed by an unexpired exception.
    AllowException,
    /// Served in audit mode; enforce would have denied.
    AuditDeny,
    Deny,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::AllowException => "allow_exception",
            Outcome::AuditDeny => "audit_deny",
            Outcome::Deny => "deny",
        }
    }
}

/// A cache Portcullis looks things up in: the `cache` label of
/// `portcullis_cache_hits_total` and `portcullis_cache_misses_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    Tag,
    Verdict,
    ManifestMemory,
    ManifestDisk,
    Blob,
}

impl Cache {
    pub fn as_str(self) -> &'static str {
        match self {
            Cache::Tag => "tag",
            Cache::Verdict => "verdict",
            Cache::ManifestMemory => "manifest_memory",
            Cache::ManifestDisk => "manifest_disk",
            Cache::Blob => "blob",
        }
    }
}

/// Why a password check was refused without running bcrypt: the `reason`
/// label of `portcullis_password_checks_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordRefusal {
    /// `password_checks` already running.
    Saturated,
    /// Too many failures from the client's address.
    Backoff,
}

impl PasswordRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            PasswordRefusal::Saturated => "saturated",
            PasswordRefusal::Backoff => "backoff",
        }
    }
}

/// A request to the shared bucket: the `op` label of
/// `portcullis_shared_store_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Get,
    Put,
    Head,
    Delete,
    List,
}

impl StoreOp {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOp::Get => "get",
            StoreOp::Put => "put",
            StoreOp::Head => "head",
            StoreOp::Delete => "delete",
            StoreOp::List => "list",
        }
    }
}

/// A request to Redis: the `op` label of `portcullis_cluster_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterOp {
    Tag,
    Ref,
    Lease,
    Discovery,
}

impl ClusterOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterOp::Tag => "tag",
            ClusterOp::Ref => "ref",
            ClusterOp::Lease => "lease",
            ClusterOp::Discovery => "discovery",
        }
    }
}

/// How a request to shared state went: the `outcome` label of
/// `portcullis_shared_store_requests_total` and
/// `portcullis_cluster_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The object or entry was there (and checked).
    Hit,
    Miss,
    /// A write or delete succeeded.
    Ok,
    /// The store or Redis failed or timed out.
    Error,
    /// An object whose bytes do not match its digest (treated as absent).
    Corrupt,
    /// An upload not made because `cache.s3.uploads` were in flight.
    Skipped,
    /// An entry whose MAC does not verify (treated as absent).
    BadMac,
}

impl Found {
    pub fn as_str(self) -> &'static str {
        match self {
            Found::Hit => "hit",
            Found::Miss => "miss",
            Found::Ok => "ok",
            Found::Error => "error",
            Found::Corrupt => "corrupt",
            Found::Skipped => "skipped",
            Found::BadMac => "bad_mac",
        }
    }
}

/// How a wait for another replica's work ended: the `outcome` label of
/// `portcullis_cluster_lease_waits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseWait {
    /// The result appeared.
    Ready,
    /// The lease ended (released or expired) without a result.
    Expired,
    /// `cluster.lease_wait` passed.
    Timeout,
}

impl LeaseWait {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseWait::Ready => "ready",
            LeaseWait::Expired => "expired",
            LeaseWait::Timeout => "timeout",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    /// Client requests by endpoint and status code.
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    /// Requests sent upstream by upstream and kind (manifest, blob, token, …).
    pub upstream_requests: IntCounterVec,
    /// Upstream failures by upstream and kind (connect, timeout, status, …).
    pub upstream_errors: IntCounterVec,
    pub cache_hits: IntCounterVec,
    pub cache_misses: IntCounterVec,
    pub cache_bytes: IntGauge,
    /// The content store's disk budget (`cache.max_bytes`), set at start-up
    /// so that alerts can compare `cache_bytes` with it.
    pub cache_budget_bytes: IntGauge,
    pub cache_evictions: IntCounter,
    /// Blob bytes sent to clients, by source (cache, upstream).
    pub blob_bytes: IntCounterVec,
    pub pull_decisions: IntCounterVec,
    pub denied_pulls: IntCounterVec,
    pub stale_served: IntCounterVec,
    pub verification_seconds: Histogram,
    /// Denials an exception overrode, by exception.
    pub exceptions_used: IntCounterVec,
    /// Verified tags the upstream moved to another digest, by upstream and
    /// the decision on the digest they now name.
    pub tag_moves: IntCounterVec,
    /// When each configured exception expires (Unix seconds).
    pub exception_expiry: GaugeVec,
    /// Config reloads by result (ok, error).
    pub config_reloads: IntCounterVec,
    /// Trust source refreshes by authority and result (ok, error).
    pub trust_refresh: IntCounterVec,
    pub trust_last_success: GaugeVec,
    pub trust_earliest_expiry: GaugeVec,
    /// The generation of policy and trust in force.
    pub trust_epoch: IntGauge,
    /// Audit events dropped because the sink could not keep up.
    pub audit_dropped: IntCounter,
    /// References being denied that `/admin/denials` holds.
    pub denials_tracked: IntGauge,
    /// Pulls left in the upstream's rate-limit window (Docker Hub reports it).
    pub upstream_ratelimit_remaining: GaugeVec,
    pub upstream_in_flight: GaugeVec,
    pub decisions_in_flight: IntGauge,
    /// Bytes of blob chunks read for clients and not yet written.
    pub read_bytes_held: IntGauge,
    pub decision_bytes_held: IntGauge,
    /// Decisions refused because a bound was exhausted, by bound.
    pub decisions_refused: IntCounterVec,
    /// Client connections open, by listener (registry, admin).
    pub connections_open: IntGaugeVec,
    /// Client connections closed by the server, by listener and reason
    /// (`no_request`: nothing asked within `header_read_timeout`; `idle`:
    /// nothing in flight for `idle_timeout`).
    pub connections_closed: IntCounterVec,
    /// Responses dropped because the client took no data for
    /// `send_timeout`, by listener.
    pub send_timeouts: IntCounterVec,
    /// Password checks refused without running bcrypt, by reason
    /// (`saturated`: `password_checks` already running; `backoff`: too many
    /// failures from the client's address).
    pub password_checks_refused: IntCounterVec,
    /// 1 when `/readyz` answers 200, 0 when it does not (shutting down, or
    /// trust degraded while a peer's is fresh).
    pub ready: IntGauge,
    /// 1 when some authority of this replica cannot be relied on now.
    pub trust_degraded: IntGauge,
    /// Per authority: 1 when it can be relied on now, 0 when decisions
    /// needing it deny `trust_unavailable`.
    pub trust_available: IntGaugeVec,
    /// Requests to the shared bucket by op and outcome.
    pub shared_store_requests: IntCounterVec,
    /// Uploads to the shared bucket in flight.
    pub shared_uploads_in_flight: IntGauge,
    /// Requests to Redis by op and outcome.
    pub cluster_requests: IntCounterVec,
    /// Waits for another replica's work, by how they ended.
    pub cluster_lease_waits: IntCounterVec,
}

fn gauge(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<GaugeVec, prometheus::Error> {
    register(registry, GaugeVec::new(Opts::new(name, help), labels)?)
}

fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> Result<M, prometheus::Error> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}

const LATENCY_BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
];

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let r = &registry;
        // Always 1: which build this is, for dashboards and upgrades.
        register(
            r,
            IntGauge::with_opts(
                Opts::new(
                    "portcullis_build_info",
                    "The Portcullis build, in its labels",
                )
                .const_label("version", env!("CARGO_PKG_VERSION")),
            )?,
        )?
        .set(1);
        // process_cpu_seconds_total, process_resident_memory_bytes,
        // process_open_fds, process_max_fds, process_threads, ...
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            requests: counter(
                r,
                "portcullis_requests_total",
                "Client requests by endpoint and status",
                &["endpoint", "status"],
            )?,
            request_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "portcullis_request_duration_seconds",
                        "Time to answer a client request (until headers are sent), by endpoint",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["endpoint"],
                )?,
            )?,
            upstream_requests: counter(
                r,
                "portcullis_upstream_requests_total",
                "Requests sent to upstream registries, by kind",
                &["upstream", "kind"],
            )?,
            upstream_errors: counter(
                r,
                "portcullis_upstream_errors_total",
                "Upstream failures, by kind",
                &["upstream", "kind"],
            )?,
            cache_hits: counter(
                r,
                "portcullis_cache_hits_total",
                "Cache hits, by cache",
                &["cache"],
            )?,
            cache_misses: counter(
                r,
                "portcullis_cache_misses_total",
                "Cache misses, by cache",
                &["cache"],
            )?,
            cache_bytes: register(
                r,
                IntGauge::new(
                    "portcullis_cache_bytes",
                    "Bytes held in the disk content store",
                )?,
            )?,
            cache_budget_bytes: register(
                r,
                IntGauge::new(
                    "portcullis_cache_budget_bytes",
                    "Disk budget of the content store (cache.max_bytes)",
                )?,
            )?,
            cache_evictions: register(
                r,
                IntCounter::new(
                    "portcullis_cache_evictions_total",
                    "Entries evicted from the disk content store to stay under cache.max_bytes",
                )?,
            )?,
            blob_bytes: counter(
                r,
                "portcullis_blob_bytes_total",
                "Blob bytes sent to clients, by source",
                &["source"],
            )?,
            pull_decisions: counter(
                r,
                "portcullis_pull_decisions_total",
                "Manifest decisions",
                &["upstream", "policy", "decision", "reason"],
            )?,
            denied_pulls: counter(
                r,
                "portcullis_denied_pulls_total",
                "Manifest requests denied",
                &["upstream", "policy", "reason"],
            )?,
            stale_served: counter(
                r,
                "portcullis_stale_served_total",
                "Tag mappings served past tag_ttl because the upstream was unavailable",
                &["upstream"],
            )?,
            verification_seconds: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "portcullis_verification_duration_seconds",
                        "Time to decide on a manifest not in the verdict cache",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )?,
            )?,
            exceptions_used: counter(
                r,
                "portcullis_exceptions_used_total",
                "Denials overridden by an exception, by exception",
                &["exception"],
            )?,
            tag_moves: counter(
                r,
                "portcullis_tag_moves_total",
                "Verified tags the upstream moved to another digest, by the decision on the new one",
                &["upstream", "decision"],
            )?,
            exception_expiry: gauge(
                r,
                "portcullis_exception_expiry_timestamp_seconds",
                "When each configured exception expires",
                &["exception"],
            )?,
            config_reloads: counter(
                r,
                "portcullis_config_reloads_total",
                "Configuration reloads, by result",
                &["result"],
            )?,
            trust_refresh: counter(
                r,
                "portcullis_trust_refresh_total",
                "Trust source refreshes, by authority and result",
                &["authority", "result"],
            )?,
            trust_last_success: gauge(
                r,
                "portcullis_trust_last_success_timestamp_seconds",
                "Last successful load of each authority's trust material",
                &["authority"],
            )?,
            trust_earliest_expiry: gauge(
                r,
                "portcullis_trust_earliest_expiry_timestamp_seconds",
                "Earliest expiry among each authority's certificates",
                &["authority"],
            )?,
            trust_epoch: register(
                r,
                IntGauge::new(
                    "portcullis_trust_epoch",
                    "Generation of policy and trust in force; each change retires cached verdicts",
                )?,
            )?,
            audit_dropped: register(
                r,
                IntCounter::new(
                    "portcullis_audit_events_dropped_total",
                    "Audit events dropped because the sink could not keep up",
                )?,
            )?,
            denials_tracked: register(
                r,
                IntGauge::new(
                    "portcullis_denials_tracked",
                    "References being denied that /admin/denials holds (at most [audit] denials)",
                )?,
            )?,
            upstream_ratelimit_remaining: gauge(
                r,
                "portcullis_upstream_ratelimit_remaining",
                "Pulls left in the upstream's rate-limit window, when it reports one",
                &["upstream"],
            )?,
            upstream_in_flight: gauge(
                r,
                "portcullis_upstream_in_flight",
                "Requests to the upstream in flight (bounded by its max_requests)",
                &["upstream"],
            )?,
            decisions_in_flight: register(
                r,
                IntGauge::new(
                    "portcullis_decisions_in_flight",
                    "Manifest decisions running (bounded by limits.decisions)",
                )?,
            )?,
            read_bytes_held: register(
                r,
                IntGauge::new(
                    "portcullis_read_bytes_held",
                    "Bytes of blob chunks read for clients and not yet written (at most 128 MiB)",
                )?,
            )?,
            decision_bytes_held: register(
                r,
                IntGauge::new(
                    "portcullis_decision_bytes_held",
                    "Bytes held by decisions in flight (bounded by limits.decision_bytes)",
                )?,
            )?,
            decisions_refused: counter(
                r,
                "portcullis_decisions_refused_total",
                "Decisions refused 503 because a bound was exhausted, by bound",
                &["bound"],
            )?,
            connections_open: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "portcullis_connections_open",
                        "Client connections open, by listener",
                    ),
                    &["listener"],
                )?,
            )?,
            connections_closed: counter(
                r,
                "portcullis_connections_closed_total",
                "Client connections the server closed, by listener and reason (no_request, idle)",
                &["listener", "reason"],
            )?,
            send_timeouts: counter(
                r,
                "portcullis_send_timeouts_total",
                "Responses dropped because the client took no data for send_timeout, by listener",
                &["listener"],
            )?,
            password_checks_refused: counter(
                r,
                "portcullis_password_checks_refused_total",
                "Password checks refused without running bcrypt, by reason (saturated, backoff)",
                &["reason"],
            )?,
            ready: register(
                r,
                IntGauge::new(
                    "portcullis_ready",
                    "1 when /readyz answers 200; 0 when shutting down, or trust degraded while a peer's is fresh",
                )?,
            )?,
            trust_degraded: register(
                r,
                IntGauge::new(
                    "portcullis_trust_degraded",
                    "1 when some authority cannot be relied on now (its pulls deny trust_unavailable)",
                )?,
            )?,
            trust_available: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "portcullis_trust_available",
                        "1 when the authority's trust can be relied on now, 0 when decisions needing it deny trust_unavailable",
                    ),
                    &["authority"],
                )?,
            )?,
            shared_store_requests: counter(
                r,
                "portcullis_shared_store_requests_total",
                "Requests to the shared S3 bucket, by op and outcome (corrupt: failed its digest, treated as absent)",
                &["op", "outcome"],
            )?,
            shared_uploads_in_flight: register(
                r,
                IntGauge::new(
                    "portcullis_shared_store_uploads_in_flight",
                    "Uploads of verified content to the shared bucket in flight (bound: cache.s3.uploads)",
                )?,
            )?,
            cluster_requests: counter(
                r,
                "portcullis_cluster_requests_total",
                "Requests to Redis, by op and outcome (bad_mac: an entry that failed its MAC, ignored)",
                &["op", "outcome"],
            )?,
            cluster_lease_waits: counter(
                r,
                "portcullis_cluster_lease_waits_total",
                "Waits for another replica's work, by how they ended",
                &["outcome"],
            )?,
            registry,
        })
    }

    /// Counts a request to the shared bucket.
    pub fn shared_store(&self, op: StoreOp, found: Found) {
        self.shared_store_requests
            .with_label_values(&[op.as_str(), found.as_str()])
            .inc();
    }

    /// Counts a request to Redis.
    pub fn cluster(&self, op: ClusterOp, found: Found) {
        self.cluster_requests
            .with_label_values(&[op.as_str(), found.as_str()])
            .inc();
    }

    /// Counts how a wait for another replica ended.
    pub fn lease_wait(&self, how: LeaseWait) {
        self.cluster_lease_waits
            .with_label_values(&[how.as_str()])
            .inc();
    }

    /// Counts a pull decision; a denial counts in
    /// `portcullis_denied_pulls_total` too.
    pub fn decision(&self, upstream: &str, policy: &str, outcome: Outcome, reason: &str) {
        self.pull_decisions
            .with_label_values(&[upstream, policy, outcome.as_str(), reason])
            .inc();
        if outcome == Outcome::Deny {
            self.denied_pulls
                .with_label_values(&[upstream, policy, reason])
                .inc();
        }
    }

    /// Counts a pull an exception let through.
    pub fn exception_used(&self, exception: &str) {
        self.exceptions_used.with_label_values(&[exception]).inc();
    }

    /// Counts a request answered on the registry listener, and its duration.
    pub fn request(&self, endpoint: &str, status: http::StatusCode, elapsed: std::time::Duration) {
        self.requests
            .with_label_values(&[endpoint, status.as_str()])
            .inc();
        self.request_seconds
            .with_label_values(&[endpoint])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a request to upstream `name` (`kind`: manifest, blob, token, ...).
    pub fn upstream_request(&self, name: &str, kind: &str) {
        self.upstream_requests
            .with_label_values(&[name, kind])
            .inc();
    }

    /// Counts an upstream fault of `kind` (`UpstreamError::kind`).
    pub fn upstream_error(&self, name: &str, kind: &str) {
        self.upstream_errors.with_label_values(&[name, kind]).inc();
    }

    /// Counts a trust refresh of `authority` (or `tuf:<url>`) and, when it
    /// succeeded, when (`seconds` since the epoch).
    pub fn trust_refreshed(&self, authority: &str, outcome: &str, succeeded_at: Option<f64>) {
        self.trust_refresh
            .with_label_values(&[authority, outcome])
            .inc();
        if let Some(seconds) = succeeded_at {
            self.trust_last_success
                .with_label_values(&[authority])
                .set(seconds);
        }
    }

    /// Counts a connection the watchdog closed for `reason` (`no_request`, `idle`).
    pub fn connection_closed(&self, listener: &str, reason: &str) {
        self.connections_closed
            .with_label_values(&[listener, reason])
            .inc();
    }

    /// Counts a decision refused because `bound` (`decisions`, `bytes`) was exhausted.
    pub fn decision_refused(&self, bound: &str) {
        self.decisions_refused.with_label_values(&[bound]).inc();
    }

    /// Creates each reason's series of refused password checks, at zero.
    pub fn password_refusals_counted(&self) {
        for reason in [PasswordRefusal::Saturated, PasswordRefusal::Backoff] {
            self.password_checks_refused
                .with_label_values(&[reason.as_str()]);
        }
    }

    /// Counts a password check refused without bcrypt.
    pub fn password_check_refused(&self, reason: PasswordRefusal) {
        self.password_checks_refused
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Counts a lookup in `cache`.
    pub fn cache_lookup(&self, cache: Cache, hit: bool) {
        let counter = if hit {
            &self.cache_hits
        } else {
            &self.cache_misses
        };
        counter.with_label_values(&[cache.as_str()]).inc();
    }

    /// The counter of blob bytes sent to clients from the cache or from upstream.
    pub fn blob_bytes_sent(&self, from_cache: bool) -> IntCounter {
        let source = if from_cache { "cache" } else { "upstream" };
        self.blob_bytes.with_label_values(&[source])
    }

    /// Counts a tag served from its last verified mapping while `upstream` was down.
    pub fn stale_served(&self, upstream: &str) {
        self.stale_served.with_label_values(&[upstream]).inc();
    }

    /// Records the pulls `upstream` says are left in its rate-limit window.
    pub fn upstream_ratelimit(&self, upstream: &str, left: f64) {
        self.upstream_ratelimit_remaining
            .with_label_values(&[upstream])
            .set(left);
    }

    /// The gauge of requests in flight to `upstream`.
    pub fn upstream_in_flight(&self, upstream: &str) -> prometheus::Gauge {
        self.upstream_in_flight.with_label_values(&[upstream])
    }

    /// The gauge of `listener`'s open connections; every series the
    /// listener can produce is created with it, at zero.
    pub fn listener_connections(&self, listener: &str) -> IntGauge {
        for reason in ["no_request", "idle"] {
            self.connections_closed
                .with_label_values(&[listener, reason]);
        }
        self.send_timeouts.with_label_values(&[listener]);
        self.connections_open.with_label_values(&[listener])
    }

    /// The counter of `listener`'s responses dropped at `send_timeout`.
    pub fn send_timeouts(&self, listener: &str) -> IntCounter {
        self.send_timeouts.with_label_values(&[listener])
    }

    /// Records whether `authority` can be relied on now.
    pub fn trust_available(&self, authority: &str, available: bool) {
        self.trust_available
            .with_label_values(&[authority])
            .set(i64::from(available));
    }

    /// Records when `authority`'s earliest CA certificate expires (Unix seconds).
    pub fn trust_expiry(&self, authority: &str, seconds: f64) {
        self.trust_earliest_expiry
            .with_label_values(&[authority])
            .set(seconds);
    }

    /// Records when `exception` expires (Unix seconds).
    pub fn exception_expiry(&self, exception: &str, seconds: f64) {
        self.exception_expiry
            .with_label_values(&[exception])
            .set(seconds);
    }

    /// Counts a config reload, put in force or refused.
    pub fn config_reload(&self, in_force: bool) {
        let result = if in_force { "ok" } else { "error" };
        self.config_reloads.with_label_values(&[result]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
