//! Building the running proxy from a validated [`Config`]: one upstream
//! client per registry, the content store, the puller and the gate.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::audit::Audit;
use crate::cache::ContentStore;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pull::Puller;
use crate::trust::{Sources, TrustSnapshot};
use crate::upstream::{self, RoutingError, Upstreams};
use crate::verify::Gate;

/// Everything a request handler needs.
pub struct App {
    pub audit: Arc<Audit>,
    pub clock: Arc<dyn Clock>,
    /// The config in force (its policy and trust parts are what reloads change).
    config: std::sync::Mutex<Config>,
    /// URL trust sources' last good documents.
    pub sources: Arc<Sources>,
    /// One rebuild at a time.
    rebuilding: tokio::sync::Mutex<()>,
    /// Whether each URL source was usable at its last refresh.
    available: std::sync::Mutex<HashMap<String, bool>>,
    /// The upstreams, by name and alias, and how a repository is routed.
    pub upstreams: Upstreams,
    pub puller: Arc<Puller>,
    pub metrics: Arc<Metrics>,
    /// False once shutdown has begun, so `/readyz` turns away new traffic.
    pub ready: AtomicBool,
    /// The other replicas, asked when this one's trust is degraded.
    pub peers: crate::readiness::Peers,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Upstream(#[from] upstream::BuildError),
    #[error("cannot open cache directory {dir}: {source}")]
    Store { dir: String, source: std::io::Error },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("trust material: {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Trust(Vec<crate::config::Problem>),
    #[error("audit sink: {0}")]
    Audit(std::io::Error),
    #[error(transparent)]
    TrustVersions(#[from] crate::trust::signed::MarksError),
    #[error(transparent)]
    Peers(#[from] crate::readiness::PeersError),
}

impl App {
    pub async fn build(config: &Config) -> Result<Arc<App>, BuildError> {
        App::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<App>, BuildError> {
        let metrics = Arc::new(Metrics::new()?);
        let upstreams = Upstreams::build(
            &config.upstreams,
            config.server.default_upstream.as_ref(),
            &metrics,
        )?;
        let store = ContentStore::open(
            &config.cache.dir,
            config.cache.max_bytes,
            Arc::clone(&metrics),
        )
        .await
        .map_err(|source| BuildError::Store {
            dir: config.cache.dir.display().to_string(),
            source,
        })?;
        let audit = Audit::start(
            &config.audit.sink,
            config.audit.queue,
            Arc::clone(&clock),
            Arc::clone(&metrics),
        )
        .await
        .map_err(BuildError::Audit)?;
        // The versions accepted survive a restart: a replay of an older
        // signed document is refused however recently the process started.
        let marks = crate::trust::signed::Marks::open(Some(
            config.cache.dir.join(crate::trust::signed::MARKS_FILE),
        ))
        .await?;
        let sources = Arc::new(Sources::new(marks));
        // Fetch every URL source once before serving; one that fails leaves
        // its authority unavailable (fail closed) until a refresh succeeds.
        let now = clock.now();
        let due = refreshables(config);
        futures_util::future::join_all(
            due.iter()
                .map(|r| refresh_source(&sources, &metrics, &audit, r, now)),
        )
        .await;
        let trust = TrustSnapshot::load_with(&config.authorities, 1, &sources.snapshot())
            .map_err(BuildError::Trust)?;
        let gate = Gate::new(config.policies.clone(), Arc::new(trust));
        export_exceptions(&metrics, config);
        export_expiry(&metrics, gate.trust());
        metrics.trust_epoch.set(1);
        let puller = Arc::new(Puller::new(
            &config.cache,
            &config.limits,
            store,
            gate,
            Arc::clone(&clock),
            Arc::clone(&metrics),
        ));
        let peers = crate::readiness::Peers::new(
            config
                .admin
                .as_ref()
                .map(|a| a.peers.clone())
                .unwrap_or_default(),
        )?;
        let app = Arc::new(App {
            audit,
            clock,
            config: std::sync::Mutex::new(config.clone()),
            sources: Arc::clone(&sources),
            rebuilding: tokio::sync::Mutex::new(()),
            available: std::sync::Mutex::new(
                sources
                    .snapshot()
                    .keys()
                    .map(|name| (name.clone(), true))
                    .collect(),
            ),
            upstreams,
            puller,
            metrics,
            ready: AtomicBool::new(true),
            peers,
        });
        app.trust_health();
        Ok(app)
    }

    /// Where an image name (`registry/repo`) is pulled from, routed as a
    /// path-prefixed request would be.
    pub fn target_for(&self, name: &str) -> Result<crate::pull::Target, RoutingError> {
        let routed = self.upstreams.route(name, None)?;
        Ok(crate::pull::Target {
            upstream: routed.upstream,
            repo: routed.repo,
        })
    }

    /// The config in force.
    pub fn config(&self) -> Config {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the config file (policies, exceptions, conditions,
    /// authorities and their files) and puts it in force with the URL
    /// sources' current material. An invalid config is refused, logged,
    /// counted and audited; the running one stays. Sections that need a
    /// restart (listeners, cache, upstreams, audit) are reported, not applied.
    pub async fn reload(&self, trigger: &str) -> Result<u64, String> {
        let _one = self.rebuilding.lock().await;
        let current = self.config();
        let new = match &current.source_file {
            Some(path) => Config::load(path).map_err(|e| e.to_string()),
            None => Ok(current.clone()),
        };
        let result = new.and_then(|new| {
            let trust = TrustSnapshot::load_with(&new.authorities, 0, &self.sources.snapshot())
                .map_err(|p| {
                    format!(
                        "trust material: {}",
                        p.iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                })?;
            Ok((new, trust))
        });
        let (new, trust) = match result {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!(trigger, error = %e, "config reload refused; the running config stays");
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                self.audit.record(
                    "config_reload",
                    serde_json::json!({"trigger": trigger, "result": "error", "error": e}),
                );
                return Err(e);
            }
        };
        let restart_needed: Vec<&str> = [
            (
                "server",
                format!("{:?}", current.server) != format!("{:?}", new.server),
            ),
            (
                "admin",
                format!("{:?}", current.admin) != format!("{:?}", new.admin),
            ),
            (
                "cache",
                format!("{:?}", current.cache) != format!("{:?}", new.cache),
            ),
            (
                "limits",
                format!("{:?}", current.limits) != format!("{:?}", new.limits),
            ),
            (
                "upstream",
                format!("{:?}", current.upstreams) != format!("{:?}", new.upstreams),
            ),
            ("audit", current.audit != new.audit),
        ]
        .into_iter()
        .filter_map(|(k, changed)| changed.then_some(k))
        .collect();
        if !restart_needed.is_empty() {
            tracing::warn!(sections = ?restart_needed, "config sections changed that take effect only after a restart");
        }
        let epoch = self.install(&new, trust, trigger);
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        self.audit.record(
            "config_reload",
            serde_json::json!({"trigger": trigger, "result": "ok", "epoch": epoch, "restart_needed": restart_needed}),
        );
        let mut merged = current;
        merged.authorities = new.authorities;
        merged.policies = new.policies;
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = merged;
        Ok(epoch)
    }

    /// Puts `trust` and `config`'s policies in force; audits what trust changed.
    fn install(&self, config: &Config, trust: TrustSnapshot, trigger: &str) -> u64 {
        let (old_gate, _) = self.puller.gate();
        let old = old_gate.trust();
        let mut changes = Vec::new();
        let names: std::collections::BTreeSet<&str> = old
            .authorities()
            .map(|a| a.name.as_str())
            .chain(trust.authorities().map(|a| a.name.as_str()))
            .collect();
        for name in names {
            let before: std::collections::BTreeSet<String> = old
                .authority(name)
                .map(|a| a.fingerprints().into_iter().collect())
                .unwrap_or_default();
            let after: std::collections::BTreeSet<String> = trust
                .authority(name)
                .map(|a| a.fingerprints().into_iter().collect())
                .unwrap_or_default();
            let added: Vec<&String> = after.difference(&before).collect();
            let removed: Vec<&String> = before.difference(&after).collect();
            if !added.is_empty() || !removed.is_empty() {
                changes.push(
                    serde_json::json!({"authority": name, "added": added, "removed": removed}),
                );
            }
        }
        export_expiry(&self.metrics, &trust);
        for gone in old
            .authorities()
            .filter(|a| trust.authority(&a.name).is_none())
        {
            let _ = self
                .metrics
                .trust_available
                .remove_label_values(&[gone.name.as_str()]);
        }
        let epoch = self
            .puller
            .install_gate(Gate::new(config.policies.clone(), Arc::new(trust)));
        self.metrics
            .trust_epoch
            .set(i64::try_from(epoch).unwrap_or(i64::MAX));
        export_exceptions(&self.metrics, config);
        self.trust_health();
        for change in changes {
            tracing::info!(%change, epoch, "trust changed");
            let mut event = change;
            event["epoch"] = serde_json::json!(epoch);
            event["source"] = serde_json::json!(trigger);
            self.audit.record("trust_change", event);
        }
        epoch
    }

    /// Refreshes one URL source or TUF repository; a change (or a source
    /// going stale, or fresh again) puts new trust in force. A verified
    /// refresh that brings nothing new renews the freshness the snapshot in
    /// force reads, so cached verdicts stay.
    pub async fn refresh(&self, what: &Refreshable) -> crate::trust::source::Refresh {
        let outcome = refresh_source(
            &self.sources,
            &self.metrics,
            &self.audit,
            what,
            self.clock.now(),
        )
        .await;
        let authority = what.key();
        let flipped = self.note_availability(what, true);
        if outcome == crate::trust::source::Refresh::Changed || flipped {
            self.put_trust_in_force(&authority).await;
        }
        outcome
    }
}

impl App {
    /// Puts trust in force again for every source whose material went stale
    /// since its last refresh (its `max_stale` or its signed expiry passed),
    /// so that cached verdicts relying on it retire within a watch tick, not
    /// at the next refresh.
    pub async fn recheck_freshness(&self) {
        for what in refreshables(&self.config()) {
            if self.note_availability(&what, false) {
                self.put_trust_in_force(&what.key()).await;
            }
        }
    }

    /// Records whether `what`'s material can be relied on now; true if that
    /// changed. A source not yet recorded is recorded only if `record_new`.
    fn note_availability(&self, what: &Refreshable, record_new: bool) -> bool {
        let key = what.key();
        let now = self.clock.now();
        let available = self
            .sources
            .snapshot()
            .get(&key)
            .is_some_and(|f| f.fresh_until(what.max_stale()) >= now);
        let mut known = self.available.lock().unwrap_or_else(|e| e.into_inner());
        if !record_new && !known.contains_key(&key) {
            return false;
        }
        known.insert(key, available) != Some(available)
    }

    async fn put_trust_in_force(&self, authority: &str) {
        let available = self
            .available
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(authority)
            .copied()
            .unwrap_or(false);
        if !available {
            tracing::error!(
                authority,
                "trust source stale (past max_stale or its signed expiry): decisions needing it deny trust_unavailable"
            );
        }
        if let Err(e) = self.reload(&format!("trust_refresh:{authority}")).await {
            tracing::error!(authority, error = %e, "could not put refreshed trust in force");
        }
    }
}

impl App {
    /// The metrics in the text exposition format, with the gauges sampled
    /// at scrape time (trust health, bytes of blob reads held) brought up to
    /// date first.
    pub fn metrics_text(&self) -> Vec<u8> {
        self.trust_health();
        let held = crate::cache::reader::held_bytes();
        self.metrics
            .read_bytes_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
        self.metrics.render()
    }

    /// Whether each authority can be relied on now, exported as
    /// `portcullis_trust_available` and `portcullis_trust_degraded`.
    pub fn trust_health(&self) -> crate::readiness::TrustHealth {
        let (gate, _) = self.puller.gate();
        let health = crate::readiness::TrustHealth::of(gate.trust(), self.clock.now());
        for a in health.authorities() {
            self.metrics
                .trust_available
                .with_label_values(&[a.name.as_str()])
                .set(i64::from(a.unavailable.is_none()));
        }
        self.metrics
            .trust_degraded
            .set(i64::from(!health.is_fresh()));
        health
    }

    /// What `/readyz` answers (exported as `portcullis_ready`): peers are
    /// asked only when this replica's trust is degraded.
    pub async fn readiness(&self) -> crate::readiness::Readiness {
        use crate::readiness::Readiness;
        let shutting_down = || !self.ready.load(Ordering::Relaxed);
        let readiness = match self.trust_health().degraded() {
            _ if shutting_down() => Readiness::ShuttingDown,
            None => Readiness::Fresh,
            Some(reason) => Readiness::Degraded {
                reason,
                fresh_peer: self.peers.fresh_peer().await,
            },
        };
        // Read after the peers answered: shutdown may have begun meanwhile.
        let readiness = if shutting_down() {
            Readiness::ShuttingDown
        } else {
            readiness
        };
        self.metrics.ready.set(i64::from(readiness.is_ready()));
        readiness
    }
}

/// How often readiness (and its gauges) is brought up to date when no
/// probe asks.
const READINESS_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps `portcullis_ready` and the trust gauges current between probes
/// until `shutdown`, asking peers (at most every
/// [`crate::readiness::PEER_CACHE`]) only while trust is degraded.
pub async fn watch_readiness(app: Arc<App>, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(READINESS_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                app.readiness().await;
            }
        }
    }
}

/// Trust refreshed on a schedule: an authority's URL source, or a TUF
/// repository (one refresh however many authorities use it).
pub enum Refreshable {
    Source {
        authority: String,
        config: crate::config::SourceConfig,
    },
    Tuf(crate::config::TufSource),
}

impl Refreshable {
    /// The name its material and metrics are kept under.
    pub fn key(&self) -> String {
        match self {
            Refreshable::Source { authority, .. } => authority.clone(),
            Refreshable::Tuf(t) => t.key(),
        }
    }

    fn interval(&self) -> std::time::Duration {
        match self {
            Refreshable::Source { config, .. } => config.refresh,
            Refreshable::Tuf(t) => t.refresh,
        }
    }

    fn max_stale(&self) -> std::time::Duration {
        match self {
            Refreshable::Source { config, .. } => config.max_stale,
            Refreshable::Tuf(t) => t.max_stale,
        }
    }
}

/// Everything `config` refreshes on a schedule.
pub fn refreshables(config: &Config) -> Vec<Refreshable> {
    let mut out: Vec<Refreshable> = Vec::new();
    for a in &config.authorities {
        if let crate::config::AuthorityKind::Source(src) = &a.kind {
            out.push(Refreshable::Source {
                authority: a.name.clone(),
                config: src.clone(),
            });
        }
        if let Some(crate::config::TrustedRootSource::Tuf(t)) = &a.trusted_root {
            if !out.iter().any(|r| r.key() == t.key()) {
                out.push(Refreshable::Tuf(t.clone()));
            }
        }
    }
    out
}

async fn refresh_source(
    sources: &Sources,
    metrics: &Metrics,
    audit: &Audit,
    what: &Refreshable,
    now: std::time::SystemTime,
) -> crate::trust::source::Refresh {
    let key = what.key();
    let authority = key.as_str();
    let outcome = match what {
        Refreshable::Source { authority, config } => sources.refresh(authority, config, now).await,
        Refreshable::Tuf(t) => sources.refresh_tuf(t, now).await,
    };
    metrics
        .trust_refresh
        .with_label_values(&[authority, outcome.label()])
        .inc();
    let new_error = sources.note(authority, &outcome, now);
    match &outcome {
        crate::trust::source::Refresh::Failed(e) => {
            tracing::warn!(authority, error = %e, "trust source refresh failed; the last good material stays");
        }
        crate::trust::source::Refresh::Refused(r) => {
            tracing::error!(authority, error = %r, "trust document refused; the last good material stays");
            // Audited when the refusal starts (or changes), not at every retry.
            if new_error {
                let url = match what {
                    Refreshable::Source { config, .. } => config.url.as_str(),
                    Refreshable::Tuf(t) => t.url.as_str(),
                };
                audit.record(
                    "trust_document_refused",
                    serde_json::json!({
                        "authority": authority, "url": url,
                        "reason": r.kind(), "error": r.to_string(),
                    }),
                );
            }
        }
        _ => {
            let secs = now
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            metrics
                .trust_last_success
                .with_label_values(&[authority])
                .set(secs);
        }
    }
    outcome
}

/// Each authority's earliest certificate expiry as a gauge.
fn export_expiry(metrics: &Metrics, trust: &TrustSnapshot) {
    metrics.trust_earliest_expiry.reset();
    for a in trust.authorities() {
        if let Some(t) = a.earliest_expiry() {
            let secs = t
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            metrics
                .trust_earliest_expiry
                .with_label_values(&[a.name.as_str()])
                .set(secs);
        }
    }
}

/// Each exception's expiry as a gauge (the set is replaced on reload).
fn export_exceptions(metrics: &Metrics, config: &Config) {
    metrics.exception_expiry.reset();
    for e in config.policies.exceptions() {
        let secs = e
            .expires
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        metrics
            .exception_expiry
            .with_label_values(&[e.name.as_str()])
            .set(secs);
    }
}

/// How soon a failed trust refresh is tried again (or its interval, if shorter).
const RETRY_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(30);

/// How often watched files are checked for changes and sources for being due.
const WATCH_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps policy and trust current until `shutdown`: reloads on SIGHUP and
/// when the config file or a file it names changes, and refreshes each URL
/// source on its interval (with up to 10% jitter).
pub async fn maintain(app: Arc<App>, shutdown: tokio_util::sync::CancellationToken) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut stamps = file_stamps(&app.config());
    let mut due: HashMap<String, std::time::Instant> = HashMap::new();
    // Refreshes run as their own tasks, so a slow source (up to its
    // timeouts) delays neither the others nor reloads; each reports back
    // when it is next due.
    let mut running: std::collections::HashSet<String> = std::collections::HashSet::new();
    let (finished, mut reports) =
        tokio::sync::mpsc::unbounded_channel::<(String, std::time::Duration)>();
    let mut tick = tokio::time::interval(WATCH_TICK);
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<Option<()>>();
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some((key, wait)) = reports.recv() => {
                running.remove(&key);
                due.insert(key, std::time::Instant::now() + jittered(wait));
            }
            _ = hup => {
                let _ = app.reload("sighup").await;
                stamps = file_stamps(&app.config());
            }
            _ = tick.tick() => {
                app.recheck_freshness().await;
                let now_stamps = file_stamps(&app.config());
                if now_stamps != stamps {
                    let _ = app.reload("file_change").await;
                    stamps = file_stamps(&app.config());
                }
                let held = app.sources.snapshot();
                for r in refreshables(&app.config()) {
                    let key = r.key();
                    if running.contains(&key) {
                        continue;
                    }
                    let now = std::time::Instant::now();
                    // A source added by a reload, or never fetched, is due at once.
                    let next = *due.entry(key.clone()).or_insert_with(|| {
                        if held.contains_key(&key) { now + jittered(r.interval()) } else { now }
                    });
                    if now >= next {
                        running.insert(key.clone());
                        let (app, finished) = (Arc::clone(&app), finished.clone());
                        tokio::spawn(async move {
                            let outcome = app.refresh(&r).await;
                            // A failed refresh is retried soon, not a whole interval later.
                            let wait = match outcome {
                                crate::trust::source::Refresh::Failed(_) | crate::trust::source::Refresh::Refused(_) => r.interval().min(RETRY_AFTER_FAILURE),
                                _ => r.interval(),
                            };
                            let _ = finished.send((key, wait));
                        });
                    }
                }
            }
        }
    }
}

/// `d` less up to 10%, so replicas do not refresh in step.
fn jittered(d: std::time::Duration) -> std::time::Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    d.mul_f64(1.0 - f64::from(nanos % 1000) / 10_000.0)
}

/// Modification times (and sizes) of the config file and every file it names.
fn file_stamps(config: &Config) -> Vec<Option<(std::time::SystemTime, u64)>> {
    let mut files: Vec<&std::path::Path> = config.source_file.iter().map(|p| p.as_path()).collect();
    for a in &config.authorities {
        match &a.kind {
            crate::config::AuthorityKind::Keys(p) | crate::config::AuthorityKind::CaRoots(p) => {
                files.extend(p.iter().filter_map(crate::config::Pem::file));
            }
            crate::config::AuthorityKind::Source(s) => {
                files.extend(s.signed_by.iter().map(|p| p.as_path()));
                files.extend(s.ca_file.iter().map(|p| p.as_path()));
            }
            crate::config::AuthorityKind::Keyless { .. } => {}
        }
        match &a.trusted_root {
            Some(crate::config::TrustedRootSource::File(p)) => files.push(p),
            Some(crate::config::TrustedRootSource::Tuf(t)) => {
                files.extend(t.root.iter().chain(&t.ca_file).map(|p| p.as_path()));
            }
            _ => {}
        }
    }
    files
        .into_iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.modified().unwrap_or(std::time::UNIX_EPOCH), m.len()))
        })
        .collect()
}

impl App {
    /// Current trust per authority: where it comes from, what it trusts,
    /// when it was last refreshed, whether it can be relied on now.
    pub fn trust_status(&self) -> serde_json::Value {
        let config = self.config();
        let (gate, epoch) = self.puller.gate();
        let fetched = self.sources.snapshot();
        let now = self.clock.now();
        let rfc = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let authorities: Vec<serde_json::Value> = config
            .authorities
            .iter()
            .map(|a| {
                let loaded = gate.trust().authority(&a.name);
                let source = match &a.kind {
                    crate::config::AuthorityKind::Keys(p) | crate::config::AuthorityKind::CaRoots(p) => {
                        serde_json::json!({"files": p.iter().map(crate::config::Pem::label).collect::<Vec<_>>()})
                    }
                    crate::config::AuthorityKind::Keyless { .. } => serde_json::json!("keyless"),
                    crate::config::AuthorityKind::Source(s) => serde_json::json!({
                        "url": s.url.as_str(), "refresh": humantime::format_duration(s.refresh).to_string(),
                        "max_stale": humantime::format_duration(s.max_stale).to_string(),
                        "signed_by": s.signed_by,
                    }),
                };
                serde_json::json!({
                    "name": a.name,
                    "source": source,
                    "fingerprints": loaded.map(|l| l.fingerprints()).unwrap_or_default(),
                    "revoked": a.revoked,
                    "revoked_serials": a.revoked_serials,
                    "trusted_root": match &a.trusted_root {
                        None => serde_json::Value::Null,
                        Some(crate::config::TrustedRootSource::PublicGood) => serde_json::json!("sigstore-public-good (embedded)"),
                        Some(crate::config::TrustedRootSource::File(p)) => serde_json::json!({"file": p}),
                        Some(crate::config::TrustedRootSource::Tuf(t)) => serde_json::json!({
                            "tuf": t.url.as_str(),
                            "last_verified": fetched.get(&t.key()).map(|f| rfc(f.verified.at())),
                            "last_error": self.sources.last_error(&t.key()).map(|e| serde_json::json!({"at": rfc(e.at), "error": e.error})),
                            "max_stale": humantime::format_duration(t.max_stale).to_string(),
                        }),
                    },
                    "last_verified": fetched.get(&a.name).map(|f| rfc(f.verified.at())),
                    "document": fetched.get(&a.name).and_then(|f| f.header).map(|h| serde_json::json!({"version": h.version, "expires": rfc(h.expires)})),
                    "last_error": self.sources.last_error(&a.name).map(|e| serde_json::json!({"at": rfc(e.at), "error": e.error})),
                    "stale_after": loaded.and_then(|l| l.fresh_until()).map(rfc),
                    "earliest_expiry": loaded.and_then(|l| l.earliest_expiry()).map(rfc),
                    "available": loaded.map(|l| l.availability(now)).map(|r| match r {
                        Ok(()) => serde_json::json!(true),
                        Err(e) => serde_json::json!(e),
                    }),
                })
            })
            .collect();
        serde_json::json!({"epoch": epoch, "authorities": authorities})
    }

    /// Policies in force, and exceptions with their expiry.
    pub fn policy_status(&self) -> serde_json::Value {
        let (gate, epoch) = self.puller.gate();
        let now = self.clock.now();
        let policies: Vec<serde_json::Value> = gate
            .policies()
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name, "mode": p.mode.as_str(),
                    "match": p.patterns.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
                    "rule": format!("{:?}", p.rule),
                    "attestations": p.attestations.iter().map(|a| serde_json::json!({
                        "name": a.name, "predicate_type": a.predicate_type, "authorities": a.authorities,
                        "condition": a.condition.as_ref().map(|c| c.name.clone()),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let exceptions: Vec<serde_json::Value> = gate
            .policies()
            .exceptions()
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.name, "match": e.pattern.to_string(), "digest": e.digest.as_ref().map(|d| d.to_string()),
                    "expires": humantime::format_rfc3339_seconds(e.expires).to_string(),
                    "expired": now >= e.expires, "ticket": e.ticket, "reason": e.reason,
                })
            })
            .collect();
        serde_json::json!({"epoch": epoch, "policies": policies, "exceptions": exceptions})
    }
}
