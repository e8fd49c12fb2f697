//! Portcullis: a pull-through caching OCI registry proxy that serves an
//! image only when policy allows it.
//!
//! Module map: each module imports only modules on lines below its own,
//! and modules on one line import none of each other (the
//! `module_graph` test checks it; decision 0012):
//!
//! - [`command`]: each CLI subcommand as a function returning a typed report (`main.rs` prints it)
//! - [`server`]: hyper listeners, path parsing, client authentication, OCI responses, admin endpoints
//! - [`app`]: builds the running proxy from a [`config::Config`], reloads it, refreshes trust
//! - [`readiness`]: what `/readyz` means: this replica's trust, and whether a peer's is fresh
//! - [`pull`]: orchestration: tag resolution, verdicts, single flight, blob fills, decision bounds
//! - [`cache`]: the disk content store and streaming reads of it; content shared in an S3 bucket
//! - [`upstream`], [`cluster`]: one client per registry (pooling, TLS, token auth, limits) and routing to them; coordination between replicas in Redis
//! - [`verify`]: the decision point; only it builds a [`verify::VerifiedManifest`]
//! - [`trust`]: authorities' keys, CA roots and identities in an immutable snapshot, and their sources
//! - [`config`]: the TOML file and its validation
//! - [`policy`]: which policy matches a repository
//! - [`material`]: trust material's vocabulary: keys, identities, vendor CAs, Sigstore roots
//! - [`audit`]: the JSON audit log
//! - [`metrics`]: Prometheus metrics
//! - [`oci`], [`clock`], [`log`]: protocol vocabulary with no I/O; injected time; text log fields

pub mod app;
pub mod audit;
pub mod cache;
pub mod clock;
pub mod cluster;
pub mod command;
pub mod config;
pub mod log;
pub mod material;
pub mod metrics;
pub mod oci;
pub mod policy;
pub mod pull;
pub mod readiness;
pub mod server;
pub mod trust;
pub mod upstream;
pub mod verify;

#[cfg(test)]
mod module_graph;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use app::App;
pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Build(#[from] app::BuildError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })
}

/// Runs the proxy (and its admin listener) until `shutdown` fires, then
/// drains open requests.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    run_with_clock(config, Arc::new(clock::SystemClock), shutdown).await
}

/// As [`run`], with time from `clock` (tests advance a
/// [`clock::ManualClock`] instead of sleeping).
pub async fn run_with_clock(
    config: Config,
    clock: Arc<dyn clock::Clock>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    // SIGUSR1 reopens the audit file; from here on it never ends the
    // process (tokio keeps the handler installed), not even while trust
    // first loads, before `maintain` listens for it.
    #[cfg(unix)]
    let _ = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1());
    let app = App::build_with_clock(&config, clock).await?;
    let listener = bind(config.server.listen).await?;
    let admin = match &config.admin {
        Some(a) => Some(bind(a.listen).await?),
        None => None,
    };
    let registry_app = Arc::new(server::Registry::new(
        Arc::clone(&app),
        config.server.auth.as_ref(),
    ));
    let tls = match &config.server.tls {
        Some(t) => Some(server::tls::acceptor(t).map_err(RunError::Tls)?),
        None => None,
    };
    let admin_listen = config
        .admin
        .as_ref()
        .map_or_else(|| "off".to_string(), |a| a.listen.to_string());
    tracing::info!(listen = %config.server.listen, admin = %admin_listen, tls = tls.is_some(), upstreams = config.upstreams.len(), "portcullis serving");
    let registry = server::serve(
        listener,
        tls,
        move |req| server::handle(Arc::clone(&registry_app), req),
        server::Limits {
            listener: "registry",
            header_read_timeout: config.server.header_read_timeout,
            idle_timeout: config.server.idle_timeout,
            send_timeout: config.server.send_timeout,
            max_connections: config.server.max_connections,
            max_streams: config.server.max_streams_per_connection,
            keepalive_interval: config.server.keepalive_interval,
        },
        Arc::clone(&app.metrics),
        shutdown.clone(),
    );
    let admin_app = Arc::clone(&app);
    let admin_metrics = Arc::clone(&app.metrics);
    let admin_shutdown = shutdown.clone();
    let admin = async move {
        if let Some(listener) = admin {
            let handler = move |req| server::handle_admin(Arc::clone(&admin_app), req);
            server::serve(
                listener,
                None,
                handler,
                server::Limits::admin(),
                admin_metrics,
                admin_shutdown,
            )
            .await;
        }
    };
    let maintain = app::maintain(Arc::clone(&app), shutdown.clone());
    let readiness = app::watch_readiness(Arc::clone(&app), shutdown.clone());
    let flag_app = Arc::clone(&app);
    let mark_unready = async move {
        shutdown.cancelled().await;
        flag_app.ready.store(false, Ordering::Relaxed);
        flag_app.metrics.ready.set(0);
    };
    let maintain = async move {
        maintain.await;
    };
    tokio::join!(registry, admin, mark_unready, maintain, readiness);
    tracing::info!("portcullis stopped");
    Ok(())
}
