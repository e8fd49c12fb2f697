//! Building the running proxy from a validated [`Config`]: one upstream
//! client per registry, the content store, the puller and the gate.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::cache::ContentStore;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pull::Puller;
use crate::trust::TrustSnapshot;
use crate::upstream::{self, Upstream};
use crate::verify::Gate;

/// Everything a request handler needs.
pub struct App {
    /// Upstreams by name and by alias (their URL host, Docker Hub's names).
    upstreams: HashMap<String, Arc<Upstream>>,
    default_upstream: Option<Arc<Upstream>>,
    pub puller: Arc<Puller>,
    pub metrics: Arc<Metrics>,
    /// False once shutdown has begun, so `/readyz` turns away new traffic.
    pub ready: AtomicBool,
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
}

const DOCKER_HUB_NAMES: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

impl App {
    pub async fn build(config: &Config) -> Result<Arc<App>, BuildError> {
        App::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<App>, BuildError> {
        let metrics = Arc::new(Metrics::new()?);
        let mut upstreams = HashMap::new();
        let mut aliases = Vec::new();
        for u in &config.upstreams {
            let client = Arc::new(Upstream::new(u, Arc::clone(&metrics))?);
            if let Some(host) = u.url.host_str() {
                aliases.push((host.to_string(), Arc::clone(&client)));
                if let Some(port) = u.url.port() {
                    aliases.push((format!("{host}:{port}"), Arc::clone(&client)));
                }
            }
            if DOCKER_HUB_NAMES.contains(&u.name.as_str()) {
                for alias in DOCKER_HUB_NAMES {
                    aliases.push((alias.to_string(), Arc::clone(&client)));
                }
            }
            upstreams.insert(u.name.to_string(), client);
        }
        for (alias, client) in aliases {
            upstreams.entry(alias).or_insert(client);
        }
        let default_upstream = config
            .server
            .default_upstream
            .as_ref()
            .and_then(|n| upstreams.get(n.as_str()).cloned());
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
        let trust = TrustSnapshot::load(&config.authorities, 1).map_err(BuildError::Trust)?;
        let gate = Gate::new(config.policies.clone(), Arc::new(trust));
        let puller = Arc::new(Puller::new(
            &config.cache,
            store,
            gate,
            clock,
            Arc::clone(&metrics),
        ));
        Ok(Arc::new(App {
            upstreams,
            default_upstream,
            puller,
            metrics,
            ready: AtomicBool::new(true),
        }))
    }

    /// The upstream configured under `name` (or an alias of it), if any.
    pub fn upstream(&self, name: &str) -> Option<Arc<Upstream>> {
        self.upstreams.get(&name.to_ascii_lowercase()).cloned()
    }

    pub fn default_upstream(&self) -> Option<&Arc<Upstream>> {
        self.default_upstream.as_ref()
    }

    /// Where an image name (`registry/repo`) is pulled from, routed as a
    /// path-prefixed request would be.
    pub fn target_for(
        &self,
        name: &str,
    ) -> Result<crate::pull::Target, crate::server::routes::RoutingError> {
        let routed = crate::server::routes::route(
            name,
            None,
            |n| self.upstream(n),
            self.default_upstream(),
            |u| u.library_prefix,
        )?;
        Ok(crate::pull::Target {
            upstream: routed.upstream,
            repo: routed.repo,
        })
    }
}
