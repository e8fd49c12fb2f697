//! Blobs: served from the content store, or streamed from the upstream while
//! being written to it. One fill per upstream and digest, however many
//! clients ask; each client reads the growing file at its own pace, and a
//! fill that fails (reset, digest mismatch, a byte past the size it may
//! have) aborts every reader and leaves nothing behind.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use super::{PullError, Puller, Target};
use crate::cache::{CommitError, Kind, Progress, RangeReader, Writer};
use crate::metrics::Cache;
use crate::oci::Digest;
use crate::oci::UpstreamName;
use crate::upstream::UpstreamError;

/// Bytes gathered from the upstream before one write to disk.
const WRITE_BATCH: usize = 256 * 1024;

/// Batches received ahead of the writer (bounds a fill's memory).
const WRITE_QUEUE: usize = 4;

/// A requested byte range, inclusive of `end` as in the `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    From(u64),
    FromTo(u64, u64),
    Suffix(u64),
}

impl ByteRange {
    /// Parses a single-range `bytes=` header; other forms are ignored (`None`).
    pub fn parse(header: &str) -> Option<ByteRange> {
        let spec = header.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        match (a.is_empty(), b.is_empty()) {
            (false, true) => Some(ByteRange::From(a.parse().ok()?)),
            (false, false) => {
                let (s, e) = (a.parse().ok()?, b.parse().ok()?);
                (s <= e).then_some(ByteRange::FromTo(s, e))
            }
            (true, false) => Some(ByteRange::Suffix(b.parse().ok()?)),
            (true, true) => None,
        }
    }

    /// `[start, end)` within a body of `size` bytes, or `None` if unsatisfiable.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        let (start, end) = match self {
            ByteRange::From(s) => (s, size),
            ByteRange::FromTo(s, e) => (s, e.saturating_add(1).min(size)),
            ByteRange::Suffix(n) => (size.saturating_sub(n), size),
        };
        (start < end).then_some((start, end))
    }
}

/// A blob response ready to stream.
pub struct BlobBody {
    /// Total size of the blob, when known.
    pub size: Option<u64>,
    /// `[start, end)` served when a range was honoured.
    pub range: Option<(u64, u64)>,
    pub reader: RangeReader,
    pub from_cache: bool,
}

/// What a HEAD learns.
pub struct BlobHead {
    pub size: Option<u64>,
}

struct Fill {
    /// The repository the fill was started for: the upstream's answer to its
    /// GET is what shows that repository holds the blob.
    repo: crate::oci::RepositoryName,
    read: Arc<File>,
    progress: watch::Receiver<Progress>,
    error: Arc<Mutex<Option<PullError>>>,
}

#[derive(Default)]
pub(super) struct Fills {
    /// Keyed by upstream as well: a fill through one upstream never stands
    /// for another's (a slow or hostile upstream cannot stall a healthy one).
    running: Mutex<HashMap<(UpstreamName, Digest), Arc<Fill>>>,
}

impl Puller {
    /// The blob `digest` of `target`, honouring `range` when the size is known.
    pub async fn blob(
        self: &Arc<Self>,
        target: &Target,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobBody, PullError> {
        self.precheck(target)?;
        self.check_blob_allowed(target, digest).await?;
        if let Some(body) = self.stored_blob(target, digest, range).await? {
            self.metrics.cache_lookup(Cache::Blob, true);
            return Ok(body);
        }
        self.metrics.cache_lookup(Cache::Blob, false);
        let Some(fill) = self.join_fill(target, digest).await? else {
            // The fill this request just missed has committed: serve its file.
            return self
                .stored_blob(target, digest, range)
                .await?
                .ok_or_else(|| PullError::Internal("blob left the store while opening".into()));
        };
        let mut progress = fill.progress.clone();
        let size = loop {
            let state = progress.borrow_and_update().clone();
            match state {
                Progress::Pending => {
                    if progress.changed().await.is_err() {
                        return Err(PullError::Internal("blob fill vanished".into()));
                    }
                }
                Progress::Started { size, .. } => break size,
                Progress::Done { size } => break Some(size),
                Progress::Failed(reason) => {
                    let typed = fill.error.lock().ok().and_then(|e| e.clone());
                    return Err(typed.unwrap_or(PullError::Internal(reason)));
                }
            }
        };
        let (range, start, end) = match (range, size) {
            (Some(r), Some(size)) => {
                let (s, e) = resolve(Some(r), size)?;
                (Some((s, e)), s, Some(e))
            }
            _ => (None, 0, None),
        };
        Ok(BlobBody {
            size,
            range,
            reader: RangeReader::new(Arc::clone(&fill.read), start, end, Some(progress)),
            from_cache: false,
        })
    }

    /// The blob from the store, if it is there.
    async fn stored_blob(
        &self,
        target: &Target,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<Option<BlobBody>, PullError> {
        let Some((file, size)) = self.store.open_blob(digest).await else {
            return Ok(None);
        };
        self.confirm(target, digest, false).await?;
        let (start, end) = resolve(range, size)?;
        Ok(Some(BlobBody {
            size: Some(size),
            range: range.map(|_| (start, end)),
            reader: RangeReader::new(Arc::new(file), start, Some(end), None),
            from_cache: true,
        }))
    }

    /// Size of a blob, from the store or by asking the upstream.
    pub async fn head_blob(
        self: &Arc<Self>,
        target: &Target,
        digest: &Digest,
    ) -> Result<BlobHead, PullError> {
        self.precheck(target)?;
        self.check_blob_allowed(target, digest).await?;
        if let Some(size) = self.store.size(Kind::Blob, digest) {
            self.confirm(target, digest, false).await?;
            return Ok(BlobHead { size: Some(size) });
        }
        let size = target.upstream.head_blob(&target.repo, digest).await?;
        self.know(target.key(digest));
        Ok(BlobHead { size })
    }

    /// Joins the fill of `digest` under way, or starts one. `None` means a
    /// fill finished since the caller looked in the store: it is stored now.
    async fn join_fill(
        self: &Arc<Self>,
        target: &Target,
        digest: &Digest,
    ) -> Result<Option<Arc<Fill>>, PullError> {
        if let Some(f) = self.running_fill(target, digest) {
            return self.join(target, digest, f).await;
        }
        let writer = self
            .store
            .begin(Kind::Blob, digest.clone())
            .await
            .map_err(|e| PullError::Internal(format!("cannot start cache write: {e}")))?;
        let read = writer
            .reopen_for_read()
            .map_err(|e| PullError::Internal(format!("cannot read cache write: {e}")))?;
        let key = (target.upstream.name.clone(), digest.clone());
        let (tx, rx) = watch::channel(Progress::Pending);
        let fill = Arc::new(Fill {
            repo: target.repo.clone(),
            read: Arc::new(read),
            progress: rx,
            error: Arc::new(Mutex::new(None)),
        });
        let started = {
            let mut running = self.fills.running.lock().unwrap_or_else(|e| e.into_inner());
            match running.get(&key) {
                // Someone else started one while we created our file; ours is dropped.
                Some(f) => Err(Arc::clone(f)),
                // A fill commits before it leaves `running`, so one that
                // finished since the caller's store lookup is visible here.
                None if self.store.contains(Kind::Blob, digest) => return Ok(None),
                None => {
                    running.insert(key.clone(), Arc::clone(&fill));
                    Ok(())
                }
            }
        };
        if let Err(theirs) = started {
            return self.join(target, digest, theirs).await;
        }
        let tx = Arc::new(tx);
        let this = Arc::clone(self);
        let (t, d, error) = (target.clone(), digest.clone(), Arc::clone(&fill.error));
        let most = self.declared_size(target, digest);
        tokio::spawn(async move {
            let final_path = writer.final_path().to_owned();
            let result = this.fill(&t, &d, most, writer, &tx).await;
            this.fills
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            match result {
                Ok(Filled {
                    size,
                    from_upstream,
                }) => {
                    this.store.committed();
                    this.know(t.key(&d));
                    tx.send_replace(Progress::Done { size });
                    // Shared for the other replicas (who may be waiting on
                    // this fill's lease, released when the upload ended).
                    if let (Some(shared), Some(lease)) = (&this.shared, from_upstream) {
                        shared.upload_blob(d.clone(), final_path).await;
                        drop(lease);
                    }
                }
                Err(e) => {
                    tracing::warn!(upstream = %t.upstream.name, repo = %t.repo, digest = %d, error = %e, "blob fill failed");
                    let message = e.to_string();
                    if let Ok(mut slot) = error.lock() {
                        *slot = Some(e);
                    }
                    tx.send_replace(Progress::Failed(message));
                }
            }
        });
        Ok(Some(fill))
    }

    /// Joins a fill under way. One started for another repository of the
    /// upstream is joined only once the upstream confirms that this
    /// repository holds the blob too.
    async fn join(
        &self,
        target: &Target,
        digest: &Digest,
        fill: Arc<Fill>,
    ) -> Result<Option<Arc<Fill>>, PullError> {
        if fill.repo != target.repo {
            self.confirm(target, digest, false).await?;
        }
        Ok(Some(fill))
    }

    fn running_fill(&self, target: &Target, digest: &Digest) -> Option<Arc<Fill>> {
        let running = self.fills.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .get(&(target.upstream.name.clone(), digest.clone()))
            .cloned()
    }

    /// The most bytes a fill may take: what a manifest declares, within
    /// `cache.max_blob_bytes`. Every bound is an upper bound; the digest
    /// decides the rest.
    fn fill_bound(&self, declared: Option<u64>) -> u64 {
        declared
            .unwrap_or(self.max_blob_bytes)
            .min(self.max_blob_bytes)
    }

    /// Fills `writer` from the shared bucket when another replica stored
    /// the blob there (or is storing it: this waits for its lease), else
    /// from the upstream. Either way the bytes are digest-checked here.
    async fn fill(
        &self,
        target: &Target,
        digest: &Digest,
        declared: Option<u64>,
        writer: Writer,
        tx: &Arc<watch::Sender<Progress>>,
    ) -> Result<Filled, PullError> {
        let Some(shared) = &self.shared else {
            let size = self.run_fill(target, digest, declared, writer, tx).await?;
            return Ok(Filled {
                size,
                from_upstream: None,
            });
        };
        // The bucket holds what any repository's pulls stored: serve it only
        // to a repository the upstream shows holds it, as the disk store does.
        self.confirm(target, digest, false).await?;
        let most = self.fill_bound(declared);
        let writer = match from_bucket(shared, digest, most, writer).await? {
            Ok(size) => return Ok(Filled::shared(size)),
            Err(writer) => writer,
        };
        // Without Redis no other replica's fill can be waited for: the
        // bucket was just looked at.
        if self.cluster.is_none() {
            let size = self.run_fill(target, digest, declared, writer, tx).await?;
            return Ok(Filled {
                size,
                from_upstream: Some(None),
            });
        }
        // Per upstream, as local fills are: a stalled upstream's fill never
        // holds up a pull from another.
        let what = format!("fill:{}:{digest}", target.upstream.name);
        // Ready only when the object fits this request's bound: one larger
        // was skipped above and would be again.
        let ready = || async { shared.blob_size(digest).await.filter(|size| *size <= most) };
        let (writer, lease) = match self.take_turn(&what, ready).await {
            super::replicas::Turn::Done(_) => {
                match from_bucket(shared, digest, most, writer).await? {
                    Ok(size) => return Ok(Filled::shared(size)),
                    Err(writer) => (writer, None),
                }
            }
            super::replicas::Turn::Mine(lease) => (writer, lease),
        };
        let size = self.run_fill(target, digest, declared, writer, tx).await?;
        Ok(Filled {
            size,
            // Uploaded even without a lease (Redis down): content is shared
            // by digest, and a second put writes the same bytes.
            from_upstream: Some(lease),
        })
    }

    /// Downloads the blob into `writer`, publishing progress; returns its
    /// size once the content is verified and stored. The fill takes at most
    /// the size a manifest declares (`declared`), else the Content-Length,
    /// else `cache.max_blob_bytes`, and fails at the first byte past it. Receiving from the
    /// upstream runs beside hashing and writing (a blocking writer fed through
    /// a short queue), and readers get the last byte as soon as the digest
    /// matched, before the file is synced and published.
    async fn run_fill(
        &self,
        target: &Target,
        digest: &Digest,
        declared: Option<u64>,
        writer: Writer,
        tx: &Arc<watch::Sender<Progress>>,
    ) -> Result<u64, PullError> {
        let mut response = target.upstream.fetch_blob(&target.repo, digest).await?;
        let length = response.content_length();
        let most = self.fill_bound(declared);
        if let Some(length) = length.filter(|&l| l > most) {
            let e = UpstreamError::BadResponse(format!(
                "blob has Content-Length {length}, more than the {most} bytes it may have"
            ));
            return Err(target.upstream.record_fault(e).into());
        }
        let size = length;
        tx.send_replace(Progress::Started { size, written: 0 });
        let (batches, queue) = tokio::sync::mpsc::channel::<Vec<Bytes>>(WRITE_QUEUE);
        let writing = write_batches(writer, queue, size, Arc::clone(tx));
        let received = receive(target, &mut response, length, most, batches).await;
        let writer = writing
            .await
            .map_err(|e| PullError::Internal(format!("write task failed: {e}")))?;
        received?;
        let writer = writer.map_err(|e| PullError::Internal(format!("cache write failed: {e}")))?;
        verified(target, writer, size, digest, tx).await
    }
}

/// The blocking writer of a fill: writes each batch from `queue`, then
/// publishes how much is written.
fn write_batches(
    mut writer: Writer,
    mut queue: tokio::sync::mpsc::Receiver<Vec<Bytes>>,
    size: Option<u64>,
    progress: Arc<watch::Sender<Progress>>,
) -> tokio::task::JoinHandle<std::io::Result<Writer>> {
    tokio::task::spawn_blocking(move || {
        while let Some(batch) = queue.blocking_recv() {
            for chunk in &batch {
                writer.write(chunk)?;
            }
            progress.send_replace(Progress::Started {
                size,
                written: writer.written(),
            });
        }
        Ok(writer)
    })
}

/// Receives the body into `batches` (chunks as received, no copy), failing
/// at the first byte past `most` or when the body ends before its
/// Content-Length (`length`). A closed queue means the writer failed: its
/// error is the one that counts.
async fn receive(
    target: &Target,
    response: &mut reqwest::Response,
    length: Option<u64>,
    most: u64,
    batches: tokio::sync::mpsc::Sender<Vec<Bytes>>,
) -> Result<(), PullError> {
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_bytes = 0;
    let mut received = 0u64;
    loop {
        let chunk = match response.chunk().await {
            Ok(chunk) => chunk,
            Err(e) => {
                let fault = match length {
                    // The body ended (or broke) before its Content-Length.
                    Some(expected) if received < expected && !e.is_timeout() => {
                        UpstreamError::Truncated { expected, received }
                    }
                    _ => UpstreamError::from_reqwest(&e),
                };
                return Err(target.upstream.record_fault(fault).into());
            }
        };
        let done = chunk.is_none();
        if let Some(chunk) = chunk {
            received += chunk.len() as u64;
            if received > most {
                let e = UpstreamError::BadResponse(format!(
                    "blob longer than the {most} bytes it may have"
                ));
                return Err(target.upstream.record_fault(e).into());
            }
            pending_bytes += chunk.len();
            pending.push(chunk);
        }
        if pending_bytes >= WRITE_BATCH || (done && !pending.is_empty()) {
            pending_bytes = 0;
            if batches.send(std::mem::take(&mut pending)).await.is_err() {
                return Ok(());
            }
        }
        if done {
            return Ok(());
        }
    }
}

/// Checks what `writer` holds against the Content-Length (`size`) and
/// `digest`; once it matches, lets readers finish and stores the file
/// (a failure to store loses only the cache copy). Returns the size.
async fn verified(
    target: &Target,
    mut writer: Writer,
    size: Option<u64>,
    digest: &Digest,
    tx: &watch::Sender<Progress>,
) -> Result<u64, PullError> {
    let written = writer.written();
    if let Some(expected) = size.filter(|s| *s != written) {
        let e = UpstreamError::Truncated {
            expected,
            received: written,
        };
        return Err(target.upstream.record_fault(e).into());
    }
    match writer.verify() {
        Ok(()) => {}
        Err(CommitError::Mismatch { expected, actual }) => {
            let e = UpstreamError::DigestMismatch { expected, actual };
            return Err(target.upstream.record_fault(e).into());
        }
        Err(CommitError::Io(e)) => {
            return Err(PullError::Internal(format!("cache write failed: {e}")));
        }
    }
    // Every byte is verified: readers may finish while the file is synced.
    tx.send_replace(Progress::Done { size: written });
    let stored = match tokio::task::spawn_blocking(move || writer.commit_blocking()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(error) = stored {
        tracing::warn!(digest = %digest, %error, "verified blob could not be stored");
    }
    Ok(written)
}

/// A fill's result: the blob's size, and for a fill from the upstream the
/// lease (if any) held until the blob is shared.
struct Filled {
    size: u64,
    from_upstream: Option<Option<crate::cluster::Lease>>,
}

impl Filled {
    fn shared(size: u64) -> Filled {
        Filled {
            size,
            from_upstream: None,
        }
    }
}

/// The blob from the bucket into `writer`, checked and stored: its size, or
/// the writer back (emptied) when the bucket does not have it intact.
async fn from_bucket(
    shared: &crate::cache::SharedStore,
    digest: &Digest,
    most: u64,
    writer: Writer,
) -> Result<Result<u64, Writer>, PullError> {
    let (mut writer, verified) = shared
        .download_blob(digest, most, writer)
        .await
        .map_err(PullError::Internal)?;
    if !verified {
        writer
            .restart()
            .map_err(|e| PullError::Internal(format!("cannot restart cache write: {e}")))?;
        return Ok(Err(writer));
    }
    let size = writer.written();
    match tokio::task::spawn_blocking(move || writer.commit_blocking()).await {
        Ok(Ok(_)) => Ok(Ok(size)),
        Ok(Err(e)) => Err(PullError::Internal(format!("cache write failed: {e}"))),
        Err(e) => Err(PullError::Internal(format!("cache write failed: {e}"))),
    }
}

fn resolve(range: Option<ByteRange>, size: u64) -> Result<(u64, u64), PullError> {
    match range {
        None => Ok((0, size)),
        Some(r) => r
            .resolve(size)
            .ok_or(PullError::RangeNotSatisfiable { size }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_header_forms() {
        assert_eq!(ByteRange::parse("bytes=10-"), Some(ByteRange::From(10)));
        assert_eq!(
            ByteRange::parse("bytes=0-99"),
            Some(ByteRange::FromTo(0, 99))
        );
        assert_eq!(ByteRange::parse("bytes=-5"), Some(ByteRange::Suffix(5)));
        assert_eq!(ByteRange::parse("bytes=5-1"), None);
        assert_eq!(ByteRange::parse("bytes=0-1,5-6"), None);
        assert_eq!(ByteRange::parse("items=0-1"), None);
    }

    #[test]
    fn range_resolution_clamps_and_rejects() {
        assert_eq!(ByteRange::From(10).resolve(100), Some((10, 100)));
        assert_eq!(ByteRange::FromTo(0, 999).resolve(100), Some((0, 100)));
        assert_eq!(ByteRange::Suffix(30).resolve(100), Some((70, 100)));
        assert_eq!(ByteRange::From(100).resolve(100), None);
    }
}
