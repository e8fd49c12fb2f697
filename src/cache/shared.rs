//! Content shared by replicas in an S3-compatible bucket (decision 0013).
//!
//! Layout under the prefix mirrors the disk store: `blobs/<alg>/<hex>` and
//! `manifests/<alg>/<hex>` (first line the media type, then the exact
//! bytes). Only content whose digest already matched is written, and an
//! object appears only when its put (or multipart upload) completes, so no
//! replica sees a partial object. Nothing read from the bucket is trusted:
//! a manifest is hashed when read, a blob is downloaded through the disk
//! store's digest-checking [`Writer`]; content that fails is treated as
//! absent, deleted and counted.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};

use super::store::{Kind, Writer};
use crate::cluster::Subject;
use crate::config::S3Config;
use crate::metrics::{Found, Metrics, StoreOp};
use crate::oci::{Digest, MediaType, RepositoryName, UpstreamName};

/// Blobs larger than this are uploaded in parts (S3's minimum part size is 5 MiB).
const PART: usize = 8 << 20;

/// Reference hints written at once, and read per subject.
const REFERENCE_PUTS: usize = 8;
const MAX_HINTS: usize = 8;

/// A blob download may take `cache.s3.timeout` and the time its size takes
/// at this rate (bytes/s), shared by the downloads running when it starts:
/// slower than that, the blob comes from the upstream.
const MIN_DOWNLOAD_RATE: f64 = (8 << 20) as f64;

/// Bytes gathered from a download before one write to disk.
const WRITE_BATCH: usize = 1 << 20;

/// Failed requests in a row after which the bucket is left alone for
/// [`BREAKER_OPEN`]: a dead bucket then costs no request its timeout.
const BREAKER_FAILURES: u32 = 3;
const BREAKER_OPEN: Duration = Duration::from_secs(10);

pub struct SharedStore {
    bucket: AmazonS3,
    /// The same bucket for blob downloads, bounded by how long a read
    /// stalls rather than by the whole request.
    downloads: AmazonS3,
    /// Blob downloads running now.
    downloading: Arc<std::sync::atomic::AtomicUsize>,
    timeout: Duration,
    prefix: String,
    uploads: Arc<tokio::sync::Semaphore>,
    breaker: Breaker,
    metrics: Arc<Metrics>,
}

/// One of the things an [`AtomicUsize`](std::sync::atomic::AtomicUsize)
/// counts, while it lives.
struct Running(Arc<std::sync::atomic::AtomicUsize>);

impl Running {
    fn count(counter: &Arc<std::sync::atomic::AtomicUsize>) -> Running {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Running(Arc::clone(counter))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Consecutive failures, and until when requests are not sent.
#[derive(Default)]
struct Breaker {
    failures: std::sync::atomic::AtomicU32,
    open_until: Mutex<Option<std::time::Instant>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cache.s3: {0}")]
pub struct SetupError(String);

impl SharedStore {
    /// A client for the bucket. Nothing is sent until content is asked for:
    /// a bucket that is down at start-up is a degraded cache, not a failed start.
    pub fn new(settings: &S3Config, metrics: Arc<Metrics>) -> Result<Arc<SharedStore>, SetupError> {
        let credentials = Arc::new(FileCredentials {
            key_id: settings.access_key_id_file.clone(),
            secret: settings.secret_access_key_file.clone(),
            read: Mutex::new(None),
        });
        // Read once now so a missing file is a start-up error, not a denial later.
        credentials.current().map_err(SetupError)?;
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: settings.timeout,
            ..RetryConfig::default()
        };
        let connect = settings.timeout.min(Duration::from_secs(5));
        let client = |options: ClientOptions| {
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(&settings.bucket)
                .with_region(&settings.region)
                .with_credentials(Arc::clone(&credentials) as _)
                .with_virtual_hosted_style_request(!settings.path_style)
                .with_client_options(options.with_connect_timeout(connect).with_allow_http(true))
                .with_retry(retry.clone());
            if let Some(endpoint) = &settings.endpoint {
                builder = builder.with_endpoint(endpoint.as_str().trim_end_matches('/'));
            }
            builder.build().map_err(|e| SetupError(e.to_string()))
        };
        // Every request within `timeout`, but a blob download, which may
        // take longer than that: it must not stall for `timeout`, and its
        // whole is bounded by its size (see `download_blob`).
        let bucket = client(ClientOptions::new().with_timeout(settings.timeout))?;
        let downloads = client(
            ClientOptions::new()
                .with_timeout_disabled()
                .with_read_timeout(settings.timeout),
        )?;
        metrics.shared_uploads_in_flight.set(0);
        Ok(Arc::new(SharedStore {
            bucket,
            downloads,
            downloading: Arc::default(),
            timeout: settings.timeout,
            prefix: settings.prefix.clone(),
            uploads: Arc::new(tokio::sync::Semaphore::new(settings.uploads)),
            breaker: Breaker::default(),
            metrics,
        }))
    }

    fn object(&self, kind: Kind, digest: &Digest) -> ObjectPath {
        let dir = match kind {
            Kind::Blob => "blobs",
            Kind::Manifest => "manifests",
        };
        ObjectPath::from(format!(
            "{}{dir}/{}/{}",
            self.prefix,
            digest.algorithm().as_str(),
            digest.hex()
        ))
    }

    /// A manifest from the bucket: its media type and exact bytes, if the
    /// object is there and hashes to `digest`.
    pub async fn read_manifest(&self, digest: &Digest, most: u64) -> Option<(MediaType, Bytes)> {
        if !self.available(StoreOp::Get) {
            return None;
        }
        let path = self.object(Kind::Manifest, digest);
        let raw = match self.bucket.get(&path).await {
            // More than this request may take is not corruption (another
            // repository's manifests may declare more): absent here, kept.
            Ok(r) if r.meta.size > most + 256 => {
                self.metrics.shared_store(StoreOp::Get, Found::Skipped);
                return None;
            }
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        let raw = match raw {
            Ok(raw) => raw,
            Err(object_store::Error::NotFound { .. }) => {
                self.answered(StoreOp::Get, Found::Miss);
                return None;
            }
            Err(e) => {
                self.failed(StoreOp::Get, digest, &e);
                return None;
            }
        };
        let parsed = raw.iter().position(|&b| b == b'\n').and_then(|split| {
            let media_type = MediaType::parse(std::str::from_utf8(&raw[..split]).ok()?).ok()?;
            let bytes = raw.slice(split + 1..);
            digest.matches(&bytes).then_some((media_type, bytes))
        });
        match parsed {
            Some(found) => {
                self.answered(StoreOp::Get, Found::Hit);
                Some(found)
            }
            None => {
                self.corrupt(Kind::Manifest, digest).await;
                None
            }
        }
    }

    /// Stores a manifest whose bytes were checked against `digest`; whether
    /// it is stored now.
    pub async fn put_manifest(
        &self,
        digest: &Digest,
        media_type: &MediaType,
        bytes: &Bytes,
    ) -> bool {
        if !self.available(StoreOp::Put) {
            return false;
        }
        let mut object = Vec::with_capacity(bytes.len() + 80);
        object.extend_from_slice(format!("{media_type}\n").as_bytes());
        object.extend_from_slice(bytes);
        let path = self.object(Kind::Manifest, digest);
        match self.bucket.put(&path, PutPayload::from(object)).await {
            Ok(_) => {
                self.answered(StoreOp::Put, Found::Ok);
                true
            }
            Err(e) => {
                self.failed(StoreOp::Put, digest, &e);
                false
            }
        }
    }

    /// A small blob (a signature document) read whole, if the object is
    /// there, at most `most` bytes, and hashes to `digest`.
    pub async fn read_blob(&self, digest: &Digest, most: u64) -> Option<Bytes> {
        if !self.available(StoreOp::Get) {
            return None;
        }
        let raw = match self.bucket.get(&self.object(Kind::Blob, digest)).await {
            Ok(r) if r.meta.size > most => {
                self.metrics.shared_store(StoreOp::Get, Found::Skipped);
                return None;
            }
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        match raw {
            Ok(bytes) if digest.matches(&bytes) => {
                self.answered(StoreOp::Get, Found::Hit);
                Some(bytes)
            }
            Ok(_) => {
                self.corrupt(Kind::Blob, digest).await;
                None
            }
            Err(e) => self.not_there(StoreOp::Get, digest, &e),
        }
    }

    /// Stores a small blob whose bytes were checked against `digest`.
    pub async fn put_blob(&self, digest: &Digest, bytes: &Bytes) {
        if !self.available(StoreOp::Put) {
            return;
        }
        let path = self.object(Kind::Blob, digest);
        match self
            .bucket
            .put(&path, PutPayload::from(bytes.clone()))
            .await
        {
            Ok(_) => self.answered(StoreOp::Put, Found::Ok),
            Err(e) => self.failed(StoreOp::Put, digest, &e),
        }
    }

    /// The size of a blob in the bucket, if it is there.
    pub async fn blob_size(&self, digest: &Digest) -> Option<u64> {
        if !self.available(StoreOp::Head) {
            return None;
        }
        match self.bucket.head(&self.object(Kind::Blob, digest)).await {
            Ok(meta) => {
                self.answered(StoreOp::Head, Found::Hit);
                Some(meta.size)
            }
            Err(e) => self.not_there(StoreOp::Head, digest, &e),
        }
    }

    /// Downloads a blob of at most `most` bytes into `writer` and checks it
    /// against its digest; hands the writer back with whether it now holds
    /// the verified blob. False when the object is absent, too large,
    /// unreadable or corrupt (then it is deleted): the caller restarts the
    /// writer and fetches the blob elsewhere.
    pub async fn download_blob(
        &self,
        digest: &Digest,
        most: u64,
        writer: Writer,
    ) -> Result<(Writer, bool), String> {
        if !self.available(StoreOp::Get) {
            return Ok((writer, false));
        }
        let path = self.object(Kind::Blob, digest);
        let started = tokio::time::Instant::now();
        let get = tokio::time::timeout(self.timeout, self.downloads.get(&path)).await;
        let get = get.unwrap_or_else(|_| {
            Err(object_store::Error::Generic {
                store: "S3",
                source: "no answer within cache.s3.timeout".into(),
            })
        });
        let result = match get {
            // Larger than this repository's manifests declare (or than
            // max_blob_bytes): absent for this request, not deleted, so a
            // manifest declaring a small size cannot remove a shared blob.
            Ok(r) if r.meta.size > most => {
                self.metrics.shared_store(StoreOp::Get, Found::Skipped);
                return Ok((writer, false));
            }
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                self.answered(StoreOp::Get, Found::Miss);
                return Ok((writer, false));
            }
            Err(e) => {
                self.failed(StoreOp::Get, digest, &e);
                return Ok((writer, false));
            }
        };
        let _running = Running::count(&self.downloading);
        let sharing = self
            .downloading
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(1);
        let deadline = started
            + self.timeout
            + Duration::from_secs_f64(result.meta.size as f64 * sharing as f64 / MIN_DOWNLOAD_RATE);
        let mut stream = result.into_stream();
        let mut writer = writer;
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batched = 0;
        let mut received = 0u64;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await else {
                // Counted, but not against the bucket's health: slow is
                // not down (a stall fails a read within the timeout).
                tracing::warn!(%digest, "blob download from the shared bucket too slow; fetching it elsewhere");
                self.metrics.shared_store(StoreOp::Get, Found::Error);
                return Ok((writer, false));
            };
            let done = next.is_none();
            match next {
                Some(Ok(chunk)) => {
                    received += chunk.len() as u64;
                    if received > most {
                        // Longer than its listed size: the object lies.
                        self.corrupt(Kind::Blob, digest).await;
                        return Ok((writer, false));
                    }
                    batched += chunk.len();
                    batch.push(chunk);
                }
                Some(Err(e)) => {
                    self.failed(StoreOp::Get, digest, &e);
                    return Ok((writer, false));
                }
                None => {}
            }
            if batched >= WRITE_BATCH || (done && !batch.is_empty()) {
                let chunks = std::mem::take(&mut batch);
                batched = 0;
                let written = tokio::task::spawn_blocking(move || {
                    let result = chunks.iter().try_for_each(|c| writer.write(c));
                    (writer, result)
                })
                .await;
                match written {
                    Ok((w, Ok(()))) => writer = w,
                    Ok((w, Err(e))) => {
                        tracing::warn!(%digest, error = %e, "writing a blob read from the bucket failed");
                        return Ok((w, false));
                    }
                    Err(e) => {
                        // The writer went with the task; its drop removed the file.
                        return Err(format!("blob write task failed: {e}"));
                    }
                }
            }
            if done {
                break;
            }
        }
        match writer.verify() {
            Ok(()) => {
                self.answered(StoreOp::Get, Found::Hit);
                Ok((writer, true))
            }
            Err(_) => {
                self.corrupt(Kind::Blob, digest).await;
                Ok((writer, false))
            }
        }
    }

    /// Uploads a verified, committed blob from its local file, beside
    /// serving. At most `cache.s3.uploads` run at once; one that finds no
    /// slot is skipped (the blob stays local) and counted. Returns when the
    /// upload ended, so a caller holding a lease can release it after.
    pub async fn upload_blob(self: &Arc<Self>, digest: Digest, file: PathBuf) {
        if !self.available(StoreOp::Put) {
            return;
        }
        let Ok(slot) = Arc::clone(&self.uploads).try_acquire_owned() else {
            self.metrics.shared_store(StoreOp::Put, Found::Skipped);
            return;
        };
        self.metrics.shared_uploads_in_flight.inc();
        // Opened before anything else: an eviction of the path later does
        // not take the bytes from under the upload.
        let uploaded = match std::fs::File::open(&file) {
            Ok(f) => self.upload_file(&digest, f).await,
            Err(e) => Err(e.to_string()),
        };
        self.metrics.shared_uploads_in_flight.dec();
        drop(slot);
        match uploaded {
            Ok(()) => self.answered(StoreOp::Put, Found::Ok),
            Err(error) => {
                tracing::warn!(%digest, %error, "uploading a blob to the shared bucket failed");
                self.metrics.shared_store(StoreOp::Put, Found::Error);
                self.breaker_failed();
            }
        }
    }

    async fn upload_file(&self, digest: &Digest, file: std::fs::File) -> Result<(), String> {
        let path = self.object(Kind::Blob, digest);
        let size = file.metadata().map_err(|e| e.to_string())?.len();
        let file = Arc::new(file);
        let read = |offset: u64, len: usize| {
            let file = Arc::clone(&file);
            async move {
                tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0; len];
                    std::os::unix::fs::FileExt::read_exact_at(file.as_ref(), &mut buf, offset)?;
                    Ok::<_, std::io::Error>(Bytes::from(buf))
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
            }
        };
        if size <= PART as u64 {
            let bytes = read(0, size as usize).await?;
            self.bucket
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        // The object appears only when the upload completes; an aborted
        // or abandoned one leaves nothing visible.
        let upload = self
            .bucket
            .put_multipart(&path)
            .await
            .map_err(|e| e.to_string())?;
        let mut parts = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut offset = 0;
        while offset < size {
            let len = (size - offset).min(PART as u64) as usize;
            let bytes = match read(offset, len).await {
                Ok(b) => b,
                Err(e) => {
                    let _ = parts.abort().await;
                    return Err(e);
                }
            };
            if let Err(e) = parts.wait_for_capacity(2).await {
                return Err(e.to_string());
            }
            parts.put(bytes);
            offset += len as u64;
        }
        parts.finish().await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Hints for replicas that cannot reach Redis: an empty object per
    /// (subject, manifest naming it). A hint grants nothing: the manifest it
    /// names is decided again, and grants only what its own bytes name.
    fn reference_dir(
        &self,
        subject: Subject,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        named: &Digest,
    ) -> String {
        let subject = match subject {
            Subject::Blob => "blob",
            Subject::Child => "child",
        };
        format!(
            "{}references/{subject}/{upstream}/{repo}/{}/{}",
            self.prefix,
            named.algorithm().as_str(),
            named.hex()
        )
    }

    /// Records that `grantor` (allowed here) names each of `named`.
    pub async fn add_references(
        &self,
        subject: Subject,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        named: &[Digest],
        grantor: &Digest,
    ) {
        if !self.available(StoreOp::Put) {
            return;
        }
        let leaf = format!("{}-{}", grantor.algorithm().as_str(), grantor.hex());
        let paths: Vec<ObjectPath> = named
            .iter()
            .map(|d| {
                ObjectPath::from(format!(
                    "{}/{leaf}",
                    self.reference_dir(subject, upstream, repo, d)
                ))
            })
            .collect();
        let bucket = &self.bucket;
        let puts = paths
            .into_iter()
            .map(|path| async move { bucket.put(&path, PutPayload::new()).await });
        let results: Vec<_> = futures_util::stream::iter(puts)
            .buffer_unordered(REFERENCE_PUTS)
            .collect()
            .await;
        match results.iter().find_map(|r| r.as_ref().err()) {
            None => self.answered(StoreOp::Put, Found::Ok),
            Some(e) => self.failed(StoreOp::Put, grantor, e),
        }
    }

    /// Up to `MAX_HINTS` manifests found naming `named` in this repository.
    pub async fn references(
        &self,
        subject: Subject,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        named: &Digest,
    ) -> Vec<Digest> {
        if !self.available(StoreOp::List) {
            return Vec::new();
        }
        let dir = ObjectPath::from(self.reference_dir(subject, upstream, repo, named));
        let listed: Vec<_> = self.bucket.list(Some(&dir)).take(MAX_HINTS).collect().await;
        let mut found = Vec::new();
        for meta in listed {
            match meta {
                Ok(meta) => {
                    let leaf = meta.location.filename().unwrap_or_default();
                    if let Some(d) = leaf
                        .split_once('-')
                        .and_then(|(alg, hex)| format!("{alg}:{hex}").parse::<Digest>().ok())
                    {
                        found.push(d);
                    }
                }
                Err(e) => {
                    self.failed(StoreOp::List, named, &e);
                    return found;
                }
            }
        }
        let outcome = if found.is_empty() {
            Found::Miss
        } else {
            Found::Hit
        };
        self.metrics.shared_store(StoreOp::List, outcome);
        found
    }

    /// Content that failed its digest (or its bounds) is counted and
    /// deleted, so the next replica fetches it from the upstream.
    async fn corrupt(&self, kind: Kind, digest: &Digest) {
        tracing::error!(%digest, "object in the shared bucket does not match its digest; deleting it");
        self.answered(StoreOp::Get, Found::Corrupt);
        match self.bucket.delete(&self.object(kind, digest)).await {
            Ok(()) => self.answered(StoreOp::Delete, Found::Ok),
            Err(e) => self.failed(StoreOp::Delete, digest, &e),
        }
    }

    /// Nothing to use: a miss when the object is not there, else a failure
    /// (both counted).
    fn not_there<T>(&self, op: StoreOp, digest: &Digest, error: &object_store::Error) -> Option<T> {
        match error {
            object_store::Error::NotFound { .. } => self.answered(op, Found::Miss),
            e => self.failed(op, digest, e),
        }
        None
    }

    fn failed(&self, op: StoreOp, digest: &Digest, error: &object_store::Error) {
        tracing::warn!(%digest, op = op.as_str(), %error, "shared bucket request failed");
        self.metrics.shared_store(op, Found::Error);
        self.breaker_failed();
    }

    fn breaker_failed(&self) {
        use std::sync::atomic::Ordering;
        let failures = self.breaker.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= BREAKER_FAILURES {
            let mut open = self
                .breaker
                .open_until
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if open.is_none() {
                tracing::warn!(
                    "shared bucket failed {failures} times in a row; not asked for {}s",
                    BREAKER_OPEN.as_secs()
                );
            }
            *open = Some(std::time::Instant::now() + BREAKER_OPEN);
        }
    }

    /// An answer from the bucket (it is reachable again): counted, and the
    /// failures in a row start over.
    fn answered(&self, op: StoreOp, found: Found) {
        self.metrics.shared_store(op, found);
        if self
            .breaker
            .failures
            .swap(0, std::sync::atomic::Ordering::Relaxed)
            >= BREAKER_FAILURES
        {
            tracing::info!("shared bucket answers again");
        }
        *self
            .breaker
            .open_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether to send a request to the bucket: not while it is left alone
    /// after failing (then the request is counted `skipped`). After
    /// [`BREAKER_OPEN`] requests are sent again; one more failure leaves
    /// it alone again.
    fn available(&self, op: StoreOp) -> bool {
        let open = *self
            .breaker
            .open_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match open {
            Some(until) if std::time::Instant::now() < until => {
                self.metrics.shared_store(op, Found::Skipped);
                false
            }
            _ => true,
        }
    }
}

/// Credentials read from two files, read again when either changes (a
/// rotated Secret takes effect without a restart).
#[derive(Debug)]
struct FileCredentials {
    key_id: PathBuf,
    secret: PathBuf,
    read: Mutex<Option<(Stamp, Arc<AwsCredential>)>>,
}

type Stamp = (Option<SystemTime>, Option<SystemTime>);

impl FileCredentials {
    fn current(&self) -> Result<Arc<AwsCredential>, String> {
        let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let stamp = (modified(&self.key_id), modified(&self.secret));
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, credential)) = read.as_ref() {
            if *seen == stamp {
                return Ok(Arc::clone(credential));
            }
        }
        let file = |p: &PathBuf, key: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("cannot read {key} ({}): {e}", p.display()))
        };
        let credential = Arc::new(AwsCredential {
            key_id: file(&self.key_id, "access_key_id_file")?,
            secret_key: file(&self.secret, "secret_access_key_file")?,
            token: None,
        });
        *read = Some((stamp, Arc::clone(&credential)));
        Ok(credential)
    }
}

#[async_trait::async_trait]
impl object_store::CredentialProvider for FileCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        self.current().map_err(|e| object_store::Error::Generic {
            store: "S3",
            source: e.into(),
        })
    }
}
