//! The disk content store: manifests and blobs by digest under one size
//! budget with least-recently-used eviction.
//!
//! Layout: `<dir>/blobs/<alg>/<hex>`, `<dir>/manifests/<alg>/<hex>` (first
//! line the media type, then the exact bytes), `<dir>/tmp/` for writes in
//! progress. A file appears under its digest only by an atomic rename after
//! its content was hashed and matched, so no partial file is ever visible;
//! `tmp/` is emptied at start-up.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;

use crate::metrics::Metrics;
use crate::oci::{Digest, Hasher, MediaType};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Blob,
    Manifest,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Blob => "blobs",
            Kind::Manifest => "manifests",
        }
    }
}

type Key = (Kind, Digest);

pub struct ContentStore {
    root: PathBuf,
    index: moka::sync::Cache<Key, u64>,
    next_tmp: AtomicU64,
    metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("content does not match its digest (expected {expected}, got {actual})")]
    Mismatch { expected: Digest, actual: Digest },
    #[error("content store I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Weight unit for the size budget: sizes are counted in KiB so that moka's
/// `u32` weights can describe blobs up to 4 TiB.
fn weight(size: u64) -> u32 {
    u32::try_from(size.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

impl ContentStore {
    /// Opens (creating) the store at `root`, clears abandoned temporary files
    /// and indexes what is already there, oldest first.
    pub async fn open(
        root: &Path,
        max_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<ContentStore>> {
        metrics
            .cache_budget_bytes
            .set(i64::try_from(max_bytes).unwrap_or(i64::MAX));
        let root = root.to_path_buf();
        let evict_root = root.clone();
        let evict_metrics = Arc::clone(&metrics);
        let index = moka::sync::Cache::builder()
            .max_capacity(max_bytes.div_ceil(1024))
            .weigher(|_k: &Key, size: &u64| weight(*size))
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |key: Arc<Key>, _size, cause| {
                if cause == RemovalCause::Size {
                    let path = path_for(&evict_root, key.0, &key.1);
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "evicting cached file failed");
                    }
                    evict_metrics.cache_evictions.inc();
                }
            })
            .build();
        let store = Arc::new(ContentStore {
            root: root.clone(),
            index,
            next_tmp: AtomicU64::new(0),
            metrics,
        });
        let scan_root = root.clone();
        let found = tokio::task::spawn_blocking(move || scan(&scan_root))
            .await
            .map_err(std::io::Error::other)??;
        for (key, size) in found {
            store.index.insert(key, size);
        }
        store.update_gauge();
        Ok(store)
    }

    fn update_gauge(&self) {
        self.index.run_pending_tasks();
        let kib = i64::try_from(self.index.weighted_size()).unwrap_or(i64::MAX);
        self.metrics.cache_bytes.set(kib.saturating_mul(1024));
    }

    pub fn path(&self, kind: Kind, digest: &Digest) -> PathBuf {
        path_for(&self.root, kind, digest)
    }

    /// Whether the store holds this content (and marks it recently used).
    pub fn contains(&self, kind: Kind, digest: &Digest) -> bool {
        self.index.get(&(kind, digest.clone())).is_some()
    }

    /// The stored size of this content, if present (marks it recently used).
    pub fn size(&self, kind: Kind, digest: &Digest) -> Option<u64> {
        self.index.get(&(kind, digest.clone()))
    }

    /// Opens a stored blob for reading: the file and its size.
    pub async fn open_blob(&self, digest: &Digest) -> Option<(File, u64)> {
        let size = self.index.get(&(Kind::Blob, digest.clone()))?;
        let path = self.path(Kind::Blob, digest);
        let file = tokio::task::spawn_blocking(move || File::open(path))
            .await
            .ok()?
            .ok()?;
        Some((file, size))
    }

    /// Reads a stored manifest: its media type and exact bytes.
    pub async fn read_manifest(&self, digest: &Digest) -> Option<(MediaType, Bytes)> {
        self.index.get(&(Kind::Manifest, digest.clone()))?;
        let raw = tokio::fs::read(self.path(Kind::Manifest, digest))
            .await
            .ok()?;
        let split = raw.iter().position(|&b| b == b'\n')?;
        let media_type = MediaType::parse(std::str::from_utf8(&raw[..split]).ok()?).ok()?;
        let bytes = Bytes::from(raw).slice(split + 1..);
        // A file that no longer hashes to its name is dropped, never served.
        if !digest.matches(&bytes) {
            tracing::error!(%digest, "stored manifest is corrupt; dropping it");
            self.index.invalidate(&(Kind::Manifest, digest.clone()));
            let _ = tokio::fs::remove_file(self.path(Kind::Manifest, digest)).await;
            return None;
        }
        Some((media_type, bytes))
    }

    /// Stores a manifest whose bytes were already checked against `digest`.
    pub async fn put_manifest(
        &self,
        digest: &Digest,
        media_type: &MediaType,
        bytes: &Bytes,
    ) -> Result<(), CommitError> {
        let mut writer = self.begin(Kind::Manifest, digest.clone()).await?;
        writer.write_prefix(format!("{media_type}\n").as_bytes())?;
        writer.write(bytes)?;
        tokio::task::spawn_blocking(move || writer.commit_blocking())
            .await
            .map_err(std::io::Error::other)??;
        self.update_gauge();
        Ok(())
    }

    /// Stores a small blob (an artifact's document) whole; its digest is
    /// checked on commit.
    pub async fn put_blob(&self, digest: &Digest, bytes: &Bytes) -> Result<(), CommitError> {
        if self.contains(Kind::Blob, digest) {
            return Ok(());
        }
        let mut writer = self.begin(Kind::Blob, digest.clone()).await?;
        writer.write(bytes)?;
        tokio::task::spawn_blocking(move || writer.commit_blocking())
            .await
            .map_err(std::io::Error::other)??;
        self.update_gauge();
        Ok(())
    }

    /// A stored blob of at most `most` bytes, read whole and checked
    /// against its digest (a file that fails is treated as absent).
    pub async fn read_small_blob(&self, digest: &Digest, most: u64) -> Option<Bytes> {
        if self.size(Kind::Blob, digest)? > most {
            return None;
        }
        let bytes = tokio::fs::read(self.path(Kind::Blob, digest)).await.ok()?;
        digest.matches(&bytes).then(|| Bytes::from(bytes))
    }

    /// Starts writing content that must hash to `digest` when committed.
    pub async fn begin(&self, kind: Kind, digest: Digest) -> std::io::Result<Writer> {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp =
            self.root
                .join("tmp")
                .join(format!("{}-{}-{n}", digest.hex(), std::process::id()));
        let final_path = self.path(kind, &digest);
        let tmp2 = tmp.clone();
        let file = tokio::task::spawn_blocking(move || File::create_new(tmp2))
            .await
            .map_err(std::io::Error::other)??;
        Ok(Writer {
            file: Some(file),
            tmp,
            final_path,
            hasher: digest.algorithm().hasher(),
            expected: digest,
            kind,
            written: 0,
            verified: false,
            index: self.index.clone(),
        })
    }

    /// Called after a commit so the size gauge stays current.
    pub fn committed(&self) {
        self.update_gauge();
    }
}

fn path_for(root: &Path, kind: Kind, digest: &Digest) -> PathBuf {
    root.join(kind.dir())
        .join(digest.algorithm().as_str())
        .join(digest.hex())
}

/// Creates the layout, empties `tmp/`, and lists stored files oldest first.
fn scan(root: &Path) -> std::io::Result<Vec<(Key, u64)>> {
    let tmp = root.join("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    let mut found = Vec::new();
    for kind in [Kind::Blob, Kind::Manifest] {
        for alg in ["sha256", "sha512"] {
            let dir = root.join(kind.dir()).join(alg);
            std::fs::create_dir_all(&dir)?;
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(digest) = name
                    .to_str()
                    .and_then(|h| format!("{alg}:{h}").parse::<Digest>().ok())
                else {
                    continue;
                };
                let meta = entry.metadata()?;
                let used = meta.accessed().or_else(|_| meta.modified()).ok();
                found.push(((kind, digest), meta.len(), used));
            }
        }
    }
    found.sort_by_key(|(_, _, used)| *used);
    Ok(found.into_iter().map(|(k, size, _)| (k, size)).collect())
}

/// Content being written. It becomes visible only through [`Writer::commit_blocking`]
/// after its digest matched; dropping it removes the temporary file.
pub struct Writer {
    file: Option<File>,
    tmp: PathBuf,
    final_path: PathBuf,
    hasher: Hasher,
    expected: Digest,
    kind: Kind,
    written: u64,
    /// The digest of what was written has been checked.
    verified: bool,
    index: moka::sync::Cache<Key, u64>,
}

impl Writer {
    fn file(&mut self) -> std::io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("writer already finished"))
    }

    /// Bytes that are stored but not part of the content (the manifest header line).
    fn write_prefix(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file()?.write_all(bytes)
    }

    /// Appends content (blocking; call from a blocking context or with small buffers).
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.verified {
            return Err(std::io::Error::other("content already verified"));
        }
        self.hasher.update(bytes);
        self.file()?.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Empties what was written so far, to write the content again from
    /// another source (a bucket object that failed its digest). Readers of
    /// [`Writer::reopen_for_read`] keep the same file.
    pub fn restart(&mut self) -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new().write(true).open(&self.tmp)?;
        file.set_len(0)?;
        self.file = Some(file);
        self.hasher = self.expected.algorithm().hasher();
        self.written = 0;
        self.verified = false;
        Ok(())
    }

    /// The file being written (what an upload after commit reads).
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// A separate read-only descriptor on the file being written.
    pub fn reopen_for_read(&self) -> std::io::Result<File> {
        File::open(&self.tmp)
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks that what was written hashes to the expected digest; after
    /// that nothing more can be written. Cheap: the hash is kept as bytes
    /// are written.
    pub fn verify(&mut self) -> Result<(), CommitError> {
        if self.verified {
            return Ok(());
        }
        let actual =
            std::mem::replace(&mut self.hasher, self.expected.algorithm().hasher()).finish();
        if actual != self.expected {
            self.file = None;
            return Err(CommitError::Mismatch {
                expected: self.expected.clone(),
                actual,
            });
        }
        self.verified = true;
        Ok(())
    }

    /// Checks the digest (unless [`Writer::verify`] did), syncs, and
    /// publishes the file under its digest.
    pub fn commit_blocking(mut self) -> Result<(), CommitError> {
        self.verify()?;
        let file = self
            .file
            .take()
            .ok_or_else(|| std::io::Error::other("writer already finished"))?;
        file.sync_data()?;
        drop(file);
        if let Some(parent) = self.final_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&self.tmp, &self.final_path)?;
        self.index
            .insert((self.kind, self.expected.clone()), self.written);
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.file.is_some() || self.tmp.exists() {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests;
