//! The HTTP side: the registry listener and the admin listener, each a hyper
//! server with a connection cap, per-connection bounds ([`conn`]: header,
//! idle and send timeouts, HTTP/2 stream and buffer limits) and graceful
//! shutdown.

mod admin;
pub mod auth;
mod conn;
mod handlers;
pub mod response;
pub mod routes;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::metrics::Metrics;
use crate::oci::ErrorCode;
use crate::pull::Target;
use crate::upstream::RoutingError;
use auth::Refusal;
use response::{Body, oci_error};
use routes::{Query, Route, RouteError};

pub use conn::Limits;

/// How long in-flight requests may take to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(30);

/// Who is on the other end of a connection; put in each request's extensions.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: std::net::SocketAddr,
    /// With mTLS: the client certificate's SHA-256 fingerprint.
    pub certificate: Option<String>,
}

/// Serves `handler` on `listener` (over TLS with `tls`) within `limits`
/// until `shutdown` fires, then drains.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: H,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = http_builder(&limits, &metrics);
    let limits = Arc::new(limits);
    let open = metrics.listener_connections(limits.listener);
    // Each connection task holds a clone; the drain waits until all are gone.
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            limits: Arc::clone(&limits),
            metrics: Arc::clone(&metrics),
            shutdown: shutdown.clone(),
        };
        let (h, tls, alive, open) = (handler.clone(), tls.clone(), alive.clone(), open.clone());
        tokio::spawn(async move {
            open.inc();
            if let Some((io, certificate)) =
                handshake(stream, tls, connection.limits.header_read_timeout).await
            {
                connection.run(io, ConnInfo { peer, certificate }, h).await;
            }
            open.dec();
            drop(permit);
            drop(alive);
        });
    }
    drop(listener);
    drop(alive);
    if tokio::time::timeout(DRAIN, all_done.recv()).await.is_err() {
        tracing::warn!("connections still open after the drain period; closing them");
    }
}

/// HTTP/1 and HTTP/2 as every connection of the listener speaks them:
/// header read timeout, stream limits, small buffers and windows, reset
/// budgets, keepalive pings, and each HTTP/2 stream under the send timeout.
fn http_builder(limits: &Limits, metrics: &Metrics) -> auto::Builder<conn::StreamExecutor> {
    let executor = conn::StreamExecutor {
        send_timeout: limits.send_timeout,
        timeouts: metrics.send_timeouts(limits.listener),
    };
    let mut builder = auto::Builder::new(executor);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_send_buf_size(conn::SEND_BUFFER)
        .initial_stream_window_size(conn::RECEIVE_WINDOW)
        .initial_connection_window_size(conn::RECEIVE_WINDOW)
        .max_pending_accept_reset_streams(conn::PENDING_RESETS)
        .max_local_error_reset_streams(conn::ERROR_RESETS)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_interval);
    builder
}

/// The TLS handshake, within `timeout`, and the client certificate's
/// fingerprint (mTLS); plain TCP as it is. `None`: the handshake failed.
async fn handshake(
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    timeout: Duration,
) -> Option<(Box<dyn Io>, Option<String>)> {
    let Some(acceptor) = tls else {
        return Some((Box::new(stream), None));
    };
    let Ok(Ok(stream)) = tokio::time::timeout(timeout, acceptor.accept(stream)).await else {
        return None;
    };
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(c.as_ref()))
        });
    Some((Box::new(stream), certificate))
}

/// What serving one connection needs from its listener.
struct Connection {
    builder: auto::Builder<conn::StreamExecutor>,
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl Connection {
    /// Serves requests on `io` until the client goes, the watchdog drops
    /// the connection, or shutdown has drained it.
    async fn run<H, F>(self, io: Box<dyn Io>, info: ConnInfo, handler: H)
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let activity = conn::Activity::new();
        let requests = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let h = handler.clone();
            req.extensions_mut().insert(info.clone());
            let in_flight = requests.begin();
            let requests = Arc::clone(&requests);
            async move {
                let progress = conn::current_progress(&requests);
                let response = h(req).await;
                Ok::<_, Infallible>(
                    response.map(|body| conn::Tracked::new(body, progress, in_flight)),
                )
            }
        });
        let connection = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut watchdog = conn::Watchdog::default();
        let mut check = conn::Watchdog::first_check(&self.limits);
        let mut closing = false;
        loop {
            tokio::select! {
                _ = connection.as_mut() => break,
                () = self.shutdown.cancelled(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = tokio::time::sleep_until(check) => {
                    let now = tokio::time::Instant::now();
                    match watchdog.look(now, &activity, &self.limits, &self.metrics) {
                        conn::Action::Wait(next) => check = next,
                        conn::Action::Close(next) => {
                            if !closing {
                                connection.as_mut().graceful_shutdown();
                                closing = true;
                            }
                            check = next;
                        }
                        conn::Action::Drop => break,
                    }
                }
            }
        }
    }
}

/// A byte stream a connection is served over (plain TCP or TLS).
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// What the registry listener serves with: the app, and client
/// authentication when it is configured.
pub struct Registry {
    app: Arc<App>,
    auth: Option<auth::ClientAuth>,
}

impl Registry {
    pub fn new(app: Arc<App>, auth: Option<&crate::config::ClientAuthConfig>) -> Registry {
        let auth = auth.map(|a| auth::ClientAuth::new(a, Arc::clone(&app.metrics)));
        Registry { app, auth }
    }
}

/// The registry API entry point.
pub async fn handle(registry: Arc<Registry>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let app = &registry.app;
    let (endpoint, response) = match identify(registry.auth.as_ref(), &req).await {
        Ok(client) => dispatch(app, &req, &client).await,
        Err(r) => ("unauthorized", *r),
    };
    app.metrics
        .request(endpoint, response.status(), started.elapsed());
    response
}

/// The client behind a request: its address and, when client
/// authentication is on, the identity its credentials prove.
#[derive(Debug, Clone)]
pub struct Client {
    pub address: Option<std::net::SocketAddr>,
    pub identity: Option<String>,
}

/// Checks the client's credentials when client authentication is on; a
/// missing or wrong credential is 401 with a Basic challenge, a password
/// that cannot be checked now 503 or (too many failures from the client's
/// address) 429, both with `Retry-After`.
async fn identify(
    auth: Option<&auth::ClientAuth>,
    req: &Request<Incoming>,
) -> Result<Client, Box<Response<Body>>> {
    let conn = req.extensions().get::<ConnInfo>();
    let certificate = conn
        .and_then(|c| c.certificate.as_ref())
        .map(|fp| format!("cert:{}", &fp[..16.min(fp.len())]));
    let address = conn.map(|c| c.peer);
    let Some(auth) = auth else {
        return Ok(Client {
            address,
            identity: certificate,
        });
    };
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.identify(header, address.map(|a| a.ip())).await {
        Ok(identity) => Ok(Client {
            address,
            identity: Some(identity),
        }),
        Err(Refusal::Unauthorized) => {
            let mut r = oci_error(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "authentication required",
                None,
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"portcullis\""),
            );
            Err(Box::new(r))
        }
        Err(Refusal::Saturated) => {
            let mut r = oci_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "too many password checks in progress; retry",
                None,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Err(Box::new(r))
        }
        Err(Refusal::BackedOff { retry_after }) => {
            let mut r = oci_error(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::Toomanyrequests,
                "too many failed passwords from this address; retry later",
                None,
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_seconds(retry_after)),
            );
            Err(Box::new(r))
        }
    }
}

/// `Retry-After` for a wait of `d`: whole seconds, rounded up, at least 1,
/// so a client that obeys it is never early.
fn retry_after_seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

async fn dispatch(
    app: &Arc<App>,
    req: &Request<Incoming>,
    client: &Client,
) -> (&'static str, Response<Body>) {
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        let mut r = oci_error(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            "this registry is a read-only proxy",
            None,
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return ("write", r);
    }
    let route = match Route::parse(req.uri().path()) {
        Ok(r) => r,
        Err(e) => return ("other", route_error(&e)),
    };
    let endpoint = route.endpoint();
    let query = Query::parse(req.uri().query());
    let name = match &route {
        Route::Base => return (endpoint, handlers::base()),
        Route::Manifest { name, .. }
        | Route::Blob { name, .. }
        | Route::Tags { name }
        | Route::Referrers { name, .. } => name.as_str(),
    };
    let routed = match app.upstreams.route(name, query.ns.as_deref()) {
        Ok(r) => r,
        Err(e) => return (endpoint, routing_error(&e)),
    };
    let target = Target {
        upstream: routed.upstream,
        repo: routed.repo,
    };
    let p = &app.puller;
    let m = &app.metrics;
    // Before anything is asked of the upstream or the cache.
    let (gate, epoch) = p.gate();
    let (upstream, repo) = (target.upstream.name.as_str(), target.repo.as_str());
    if !gate
        .policies()
        .client_may_pull(client.identity.as_deref(), upstream, repo)
    {
        return (
            endpoint,
            handlers::out_of_scope(m, &app.audit, client, &target, &route, epoch),
        );
    }
    drop(gate);
    let mut response = match &route {
        Route::Base => handlers::base(),
        Route::Manifest { reference, .. } => {
            handlers::manifest(p, m, &app.audit, client, &target, reference, method).await
        }
        Route::Blob { digest, .. } => {
            handlers::blob(p, m, &target, digest, method, req.headers()).await
        }
        Route::Tags { .. } => handlers::tags(p, &target, name, &query).await,
        Route::Referrers { digest, .. } => handlers::referrers(p, &target, digest, &query).await,
    };
    if let Some(v) = routed
        .namespace
        .and_then(|ns| HeaderValue::from_str(&ns).ok())
    {
        response.headers_mut().insert("oci-namespace", v);
    }
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    (endpoint, response)
}

fn route_error(e: &RouteError) -> Response<Body> {
    match e {
        RouteError::NotFound => oci_error(
            StatusCode::NOT_FOUND,
            ErrorCode::NameUnknown,
            "no such endpoint",
            None,
        ),
        RouteError::Reference => oci_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::ManifestInvalid,
            "invalid tag or digest",
            None,
        ),
        RouteError::Digest => oci_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::DigestInvalid,
            "invalid digest",
            None,
        ),
    }
}

fn routing_error(e: &RoutingError) -> Response<Body> {
    match e {
        RoutingError::InvalidName => oci_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::NameInvalid,
            "invalid repository name",
            None,
        ),
        RoutingError::UnknownNamespace
        | RoutingError::NoUpstream
        | RoutingError::UnknownRegistry => oci_error(
            StatusCode::NOT_FOUND,
            ErrorCode::NameUnknown,
            "no configured upstream for this name",
            None,
        ),
    }
}

pub use admin::handle as handle_admin;

#[cfg(test)]
mod retry_after_tests {
    use super::*;

    #[test]
    fn retry_after_is_the_wait_in_whole_seconds_rounded_up_and_at_least_one() {
        let secs = |s: f64| retry_after_seconds(Duration::from_secs_f64(s));
        assert_eq!(secs(0.0), 1);
        assert_eq!(secs(0.2), 1);
        assert_eq!(secs(1.5), 2);
        assert_eq!(secs(3.0), 3);
        assert_eq!(secs(59.001), 60);
    }
}
