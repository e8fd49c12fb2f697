//! One client per configured upstream registry: a shared connection pool,
//! rustls with webpki roots (plus an optional CA file), timeouts, the
//! Bearer/Basic challenge flow with a token cache, and bounded bodies.
//!
//! Credentials go only to the upstream itself and to a token realm whose host
//! is the upstream's or listed in `token_realm_hosts`; redirects to another
//! host never carry `Authorization` (reqwest strips it).

mod auth;
mod challenge;
mod credentials;
mod error;
mod routing;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;

use auth::Token;
pub use challenge::Challenge;
pub use credentials::{Credentials, CredentialsFile, Helper, Secret};
pub use error::UpstreamError;
pub use routing::{Routed, RoutingError, Upstreams, route};

use crate::config::UpstreamConfig;
use crate::metrics::Metrics;
use crate::oci::UpstreamName;
use crate::oci::{Digest, MediaType, Reference, RepositoryName};

/// Largest manifest accepted from an upstream (the spec's 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest token response, tags list or referrers index read.
const MAX_AUX_BYTES: usize = 4 << 20;

/// A registry the proxy pulls from.
pub struct Upstream {
    pub name: UpstreamName,
    base: reqwest::Url,
    http: reqwest::Client,
    realm_hosts: Vec<String>,
    credentials: CredentialsFile,
    tokens: moka::sync::Cache<String, Token>,
    basic_only: AtomicBool,
    response_timeout: Duration,
    pub library_prefix: bool,
    /// One per request in flight (`max_requests`); a request waits at most
    /// `slot_wait` for one.
    slots: Arc<tokio::sync::Semaphore>,
    /// Blob fills hold a slot for a whole transfer, so they may take only
    /// three quarters of the slots: manifests, tags and signatures always
    /// find one.
    fill_slots: Arc<tokio::sync::Semaphore>,
    slot_wait: Duration,
    metrics: Arc<Metrics>,
}

/// An upstream response that still holds its request's slot: the slot is
/// freed when the response (and so its body) is dropped.
pub struct Sent {
    response: reqwest::Response,
    _slot: Slot,
}

impl std::ops::Deref for Sent {
    type Target = reqwest::Response;
    fn deref(&self) -> &reqwest::Response {
        &self.response
    }
}

impl std::ops::DerefMut for Sent {
    fn deref_mut(&mut self) -> &mut reqwest::Response {
        &mut self.response
    }
}

struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    /// A blob fill's share of the fill slots.
    _fill: Option<tokio::sync::OwnedSemaphorePermit>,
    in_flight: prometheus::Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

/// A manifest as the upstream sent it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Bytes,
    pub content_type: Option<MediaType>,
    pub digest_header: Option<Digest>,
}

/// What a manifest HEAD told us.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    pub digest: Option<Digest>,
    pub content_type: Option<MediaType>,
}

/// A bounded body with the headers a pass-through response needs.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("upstream {name}: cannot read CA file {path}: {message}")]
    CaFile {
        name: String,
        path: String,
        message: String,
    },
    #[error("upstream {name}: TLS setup failed: {0}", name = .1)]
    Tls(String, String),
}

/// Pulls left in the window, from Docker Hub's `ratelimit-remaining: 76;w=21600`.
fn ratelimit_remaining(headers: &HeaderMap) -> Option<f64> {
    let v = headers.get("ratelimit-remaining")?.to_str().ok()?;
    v.split(';').next()?.trim().parse::<f64>().ok()
}

impl Upstream {
    pub fn new(config: &UpstreamConfig, metrics: Arc<Metrics>) -> Result<Upstream, BuildError> {
        let tls = tls_config(config)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.idle_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BuildError::Tls(e.to_string(), config.name.to_string()))?;
        let mut realm_hosts = config.token_realm_hosts.clone();
        if let Some(host) = config.url.host_str() {
            realm_hosts.push(host.to_ascii_lowercase());
        }
        Ok(Upstream {
            name: config.name.clone(),
            base: config.url.clone(),
            http,
            realm_hosts,
            credentials: match &config.credential_helper {
                Some(program) => CredentialsFile::helper(Helper {
                    program: program.clone(),
                    server: config
                        .url
                        .host_str()
                        .map(|h| match config.url.port() {
                            Some(p) => format!("{h}:{p}"),
                            None => h.to_string(),
                        })
                        .unwrap_or_default(),
                    ttl: config.credential_helper_ttl,
                }),
                None => CredentialsFile::new(config.credentials_file.clone()),
            },
            tokens: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            basic_only: AtomicBool::new(false),
            response_timeout: config.response_timeout,
            library_prefix: config.library_prefix,
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_requests)),
            fill_slots: Arc::new(tokio::sync::Semaphore::new(
                (config.max_requests * 3 / 4).max(1),
            )),
            slot_wait: config.connect_timeout,
            metrics,
        })
    }

    fn count(&self, kind: &str) {
        self.metrics.upstream_request(self.name.as_str(), kind);
    }

    fn fail(&self, e: UpstreamError) -> UpstreamError {
        self.metrics.upstream_error(self.name.as_str(), e.kind());
        if matches!(e, UpstreamError::Unauthorized) {
            self.credentials.refused();
        }
        e
    }

    /// Records each load of this upstream's credentials in `audit`.
    pub fn attach_audit(&self, audit: &Arc<crate::audit::Audit>) {
        self.credentials
            .attach_audit(Arc::clone(audit), self.name.as_str());
    }

    /// Sends a request for `/v2/<repo>/<path>`, answering an auth challenge
    /// once. Returns successful responses; maps every failure to an error.
    pub async fn send(
        &self,
        method: Method,
        repo: &RepositoryName,
        path: &str,
        query: Option<&str>,
        headers: HeaderMap,
        kind: &'static str,
    ) -> Result<Sent, UpstreamError> {
        let slot = self.slot(kind == "blob").await?;
        let mut url = self
            .base
            .join(&format!("v2/{repo}/{path}"))
            .map_err(|e| UpstreamError::BadResponse(format!("cannot build URL: {e}")))?;
        url.set_query(query);
        let scope = format!("repository:{repo}:pull");
        let mut auth = self.cached_auth(&scope).await.map_err(|e| self.fail(e))?;
        for attempt in 0..2 {
            self.count(kind);
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(value) = &auth {
                request = request.header(header::AUTHORIZATION, value);
            }
            let response = self.timed(request.send()).await.map_err(|e| self.fail(e))?;
            if let Some(left) = ratelimit_remaining(response.headers()) {
                self.metrics.upstream_ratelimit(self.name.as_str(), left);
            }
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(challenge::parse);
                auth = Some(
                    self.answer(challenge, &scope)
                        .await
                        .map_err(|e| self.fail(e))?,
                );
                continue;
            }
            return match self.check_status(response).await {
                Ok(response) => Ok(Sent {
                    response,
                    _slot: slot,
                }),
                Err(e) => Err(self.fail(e)),
            };
        }
        Err(self.fail(UpstreamError::Unauthorized))
    }

    /// A request slot (for a blob fill, also a fill slot), waiting at most
    /// `slot_wait` for them.
    async fn slot(&self, fill: bool) -> Result<Slot, UpstreamError> {
        let wait = async {
            let fill = match fill {
                true => Some(Arc::clone(&self.fill_slots).acquire_owned().await?),
                false => None,
            };
            let permit = Arc::clone(&self.slots).acquire_owned().await?;
            Ok::<_, tokio::sync::AcquireError>((permit, fill))
        };
        match tokio::time::timeout(self.slot_wait, wait).await {
            Ok(Ok((permit, fill))) => {
                let in_flight = self.metrics.upstream_in_flight(self.name.as_str());
                in_flight.inc();
                Ok(Slot {
                    _permit: permit,
                    _fill: fill,
                    in_flight,
                })
            }
            _ => Err(self.fail(UpstreamError::Saturated)),
        }
    }

    async fn timed<F>(&self, fut: F) -> Result<reqwest::Response, UpstreamError>
    where
        F: std::future::Future<Output = Result<reqwest::Response, reqwest::Error>>,
    {
        match tokio::time::timeout(self.response_timeout, fut).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Err(e)) => Err(UpstreamError::from_reqwest(&e)),
            Ok(Ok(r)) => Ok(r),
        }
    }

    async fn check_status(
        &self,
        response: reqwest::Response,
    ) -> Result<reqwest::Response, UpstreamError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        Err(match status.as_u16() {
            401 | 403 => UpstreamError::Unauthorized,
            404 => UpstreamError::NotFound,
            429 => UpstreamError::RateLimited {
                retry_after: response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok()),
            },
            s if s >= 500 => UpstreamError::Unavailable(status.as_u16()),
            s => UpstreamError::Status(s),
        })
    }

    /// HEAD a manifest: its digest and media type without a pull count.
    pub async fn head_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        accept: &str,
    ) -> Result<ManifestHead, UpstreamError> {
        let response = self
            .send(
                Method::HEAD,
                repo,
                &format!("manifests/{reference}"),
                None,
                accept_headers(accept),
                "manifest_head",
            )
            .await?;
        Ok(ManifestHead {
            digest: header_digest(response.headers()),
            content_type: content_type(response.headers()),
        })
    }

    /// GET a manifest, reading at most [`MAX_MANIFEST_BYTES`].
    pub async fn fetch_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        accept: &str,
    ) -> Result<FetchedManifest, UpstreamError> {
        let mut response = self
            .send(
                Method::GET,
                repo,
                &format!("manifests/{reference}"),
                None,
                accept_headers(accept),
                "manifest",
            )
            .await?;
        let digest_header = header_digest(response.headers());
        let content_type = content_type(response.headers());
        let bytes = read_limited(&mut response, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(FetchedManifest {
            bytes,
            content_type,
            digest_header,
        })
    }

    /// GET a blob; the caller streams and checks the body.
    pub async fn fetch_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Sent, UpstreamError> {
        self.send(
            Method::GET,
            repo,
            &format!("blobs/{digest}"),
            None,
            HeaderMap::new(),
            "blob",
        )
        .await
    }

    /// GET a small blob whole (at most `limit` bytes) and check its digest;
    /// counted as kind `signature` (discovery reads only signature blobs).
    pub async fn fetch_blob_bounded(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        limit: usize,
    ) -> Result<Bytes, UpstreamError> {
        let path = format!("blobs/{digest}");
        let mut response = self
            .send(
                Method::GET,
                repo,
                &path,
                None,
                HeaderMap::new(),
                "signature",
            )
            .await?;
        let bytes = read_limited(&mut response, limit)
            .await
            .map_err(|e| self.fail(e))?;
        if !digest.matches(&bytes) {
            return Err(self.fail(UpstreamError::DigestMismatch {
                expected: digest.clone(),
                actual: Digest::of(digest.algorithm(), &bytes),
            }));
        }
        Ok(bytes)
    }

    /// HEAD a blob: its size, if the upstream has it.
    pub async fn head_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<u64>, UpstreamError> {
        let response = self
            .send(
                Method::HEAD,
                repo,
                &format!("blobs/{digest}"),
                None,
                HeaderMap::new(),
                "blob_head",
            )
            .await?;
        Ok(response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    /// GET a small JSON resource (tags list, referrers) with a bounded body.
    pub async fn fetch_small(
        &self,
        repo: &RepositoryName,
        path: &str,
        query: Option<&str>,
        accept: &str,
        kind: &'static str,
    ) -> Result<Fetched, UpstreamError> {
        let mut response = self
            .send(Method::GET, repo, path, query, accept_headers(accept), kind)
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = read_limited(&mut response, MAX_AUX_BYTES)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(Fetched {
            status,
            headers,
            bytes,
        })
    }

    /// The query of the next page of `path` (the `Link: <…>; rel="next"`
    /// header), when the link names the same resource on this upstream.
    /// A link elsewhere is not followed. `Err` when a link is there but
    /// names something else.
    pub fn next_page(
        &self,
        repo: &RepositoryName,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Option<String>, UpstreamError> {
        let Some(link) = headers
            .get_all(header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find(|l| {
                l.split(';')
                    .skip(1)
                    .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"))
            })
        else {
            return Ok(None);
        };
        let reference = link
            .split(';')
            .next()
            .map(str::trim)
            .and_then(|r| r.strip_prefix('<'))
            .and_then(|r| r.strip_suffix('>'));
        let here = self
            .base
            .join(&format!("v2/{repo}/{path}"))
            .map_err(|e| UpstreamError::BadResponse(format!("cannot build URL: {e}")))?;
        let next = reference.and_then(|r| here.join(r).ok());
        match next {
            Some(next)
                if next.origin() == here.origin()
                    && next.path() == here.path()
                    && next.query().is_some() =>
            {
                Ok(next.query().map(str::to_string))
            }
            _ => Err(self.fail(UpstreamError::BadResponse(
                "the next-page link names another resource".into(),
            ))),
        }
    }

    /// Records a content fault found after the response was received.
    pub fn record_fault(&self, e: UpstreamError) -> UpstreamError {
        self.fail(e)
    }
}

fn tls_config(config: &UpstreamConfig) -> Result<rustls::ClientConfig, BuildError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &config.ca_file {
        let ca_err = |message: String| BuildError::CaFile {
            name: config.name.to_string(),
            path: path.display().to_string(),
            message,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| ca_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_err("no PEM certificates in file".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BuildError::Tls(e.to_string(), config.name.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn accept_headers(accept: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(accept) {
        h.insert(header::ACCEPT, v);
    }
    h
}

pub fn header_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

pub fn content_type(headers: &HeaderMap) -> Option<MediaType> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| MediaType::parse(v).ok())
}

/// Reads a whole body, refusing more than `limit` bytes (declared or actual).
pub async fn read_limited(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Bytes, UpstreamError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(UpstreamError::TooLarge { limit });
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| UpstreamError::from_reqwest(&e))?
    {
        if buf.len() + chunk.len() > limit {
            return Err(UpstreamError::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod ratelimit_tests {
    use super::*;

    #[test]
    fn docker_hub_rate_limit_headroom_is_read_from_its_header() {
        let mut h = HeaderMap::new();
        assert_eq!(ratelimit_remaining(&h), None);
        h.insert("ratelimit-remaining", "76;w=21600".parse().unwrap());
        assert_eq!(ratelimit_remaining(&h), Some(76.0));
        h.insert("ratelimit-remaining", "garbage".parse().unwrap());
        assert_eq!(ratelimit_remaining(&h), None);
    }
}
