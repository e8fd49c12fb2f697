//! Building the running proxy from a validated [`Config`]: one upstream
//! client per registry, the content store, the puller and the gate.

mod diagnostic;
mod maintain;
mod reload;
mod status;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::audit::Audit;
use crate::cache::{ContentStore, SharedStore};
use crate::clock::{Clock, SystemClock};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pull::{Puller, Shared};
use crate::trust::{Sources, TrustSnapshot, refresh};
use crate::upstream::{self, RoutingError, Upstreams};
use crate::verify::Gate;

pub use diagnostic::Scratch;
pub use maintain::maintain;
pub use reload::ReloadError;
pub use status::{
    Availability, ClientEntry, PolicyEntry, PolicyStatus, RootStatus, SourceStatus, TrustStatus,
};

/// Everything a request handler needs.
pub struct App {
    pub audit: Arc<Audit>,
    pub clock: Arc<dyn Clock>,
    /// The config in force (its policy and trust parts are what reloads change).
    config: std::sync::Mutex<Arc<Config>>,
    /// URL trust sources' last good documents.
    pub sources: Arc<Sources>,
    /// One rebuild at a time.
    rebuilding: tokio::sync::Mutex<()>,
    /// The digest of what the gate in force was built from (config file,
    /// the files it names, URL source documents, their availability), when
    /// it could be read whole: a reload of the same inputs changes nothing.
    installed_inputs: std::sync::Mutex<Option<[u8; 32]>>,
    /// Sources whose held document a reload dropped: `maintain` makes
    /// their refresh due at once.
    refetch: std::sync::Mutex<Vec<String>>,
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
    #[error(transparent)]
    SharedStore(#[from] crate::cache::shared::SetupError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::SetupError),
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
            config.audit.denials,
            Arc::clone(&clock),
            Arc::clone(&metrics),
        )
        .await
        .map_err(BuildError::Audit)?;
        upstreams.attach_audit(&audit);
        // Before trust reads the files (see `App::load_new`).
        let files = reload::files_digest(config);
        let (sources, gate) = first_trust(config, clock.now(), &metrics, &audit).await?;
        let shared = Shared {
            store: match &config.cache.s3 {
                Some(s3) => Some(SharedStore::new(s3, Arc::clone(&metrics))?),
                None => None,
            },
            cluster: match &config.cluster {
                Some(cluster) => Some(Cluster::new(cluster, Arc::clone(&metrics))?),
                None => None,
            },
        };
        let puller = Arc::new(Puller::new(
            &config.cache,
            &config.limits,
            store,
            shared,
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
            config: std::sync::Mutex::new(Arc::new(config.clone())),
            sources: Arc::clone(&sources),
            rebuilding: tokio::sync::Mutex::new(()),
            installed_inputs: std::sync::Mutex::new(None),
            refetch: std::sync::Mutex::new(Vec::new()),
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
        // Nothing refreshes before `maintain` starts: the sources hold what
        // the first gate was built from.
        // The files read again: a change while trust loaded them (it may
        // wait on the network) leaves no digest, so the next reload installs.
        let inputs = app
            .inputs_digest(files)
            .filter(|_| reload::files_digest(config) == files);
        *app.installed_inputs
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = inputs;
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
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.lock().unwrap_or_else(|e| e.into_inner()))
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
        let denials = self.audit.denials().held();
        self.metrics
            .denials_tracked
            .set(i64::try_from(denials).unwrap_or(i64::MAX));
        self.metrics.render()
    }

    /// Whether each authority can be relied on now, exported as
    /// `portcullis_trust_available` and `portcullis_trust_degraded`.
    pub fn trust_health(&self) -> crate::readiness::TrustHealth {
        let (gate, _) = self.puller.gate();
        let health = crate::readiness::TrustHealth::of(gate.trust(), self.clock.now());
        for a in health.authorities() {
            self.metrics
                .trust_available(&a.name, a.unavailable.is_none());
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

/// The trust in force when serving starts: every URL source fetched once
/// (one that fails leaves its authority unavailable, failing closed, until a
/// refresh succeeds), loaded into the first gate, generation 1.
async fn first_trust(
    config: &Config,
    now: std::time::SystemTime,
    metrics: &Arc<Metrics>,
    audit: &Audit,
) -> Result<(Arc<Sources>, Gate), BuildError> {
    // The versions accepted survive a restart: a replay of an older
    // signed document is refused however recently the process started.
    let marks = crate::trust::signed::Marks::open(Some(
        config.cache.dir.join(crate::trust::signed::MARKS_FILE),
    ))
    .await?;
    let sources = Arc::new(Sources::new(marks));
    let due = refresh::refreshables(&config.authorities);
    futures_util::future::join_all(
        due.iter()
            .map(|r| refresh::refresh(&sources, metrics, audit, r, now)),
    )
    .await;
    let trust = TrustSnapshot::load_with(&config.authorities, 1, &sources.snapshot())
        .map_err(BuildError::Trust)?;
    let gate = Gate::new(config.policies.clone(), Arc::new(trust));
    export_exceptions(metrics, config);
    export_expiry(metrics, gate.trust());
    metrics.trust_epoch.set(1);
    Ok((sources, gate))
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
            metrics.trust_expiry(&a.name, secs);
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
        metrics.exception_expiry(&e.name, secs);
    }
}
