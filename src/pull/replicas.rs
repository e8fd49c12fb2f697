//! Working with other replicas (decision 0013): content from the shared
//! bucket, one replica doing a piece of work while the others wait for it,
//! and references that let any replica re-derive a grant. Nothing here
//! grants anything: content read back is digest-checked, and a reference
//! only names a manifest that this replica then decides itself.

use super::*;
use crate::cluster::{Lease, Subject};
use crate::upstream::FetchedManifest;

/// How far ahead of this replica's clock a shared entry may be dated.
const SKEW: Duration = Duration::from_secs(5);

/// Either another replica's result, or this replica's turn to do the work
/// (holding the lease while it does, when Redis could be asked).
pub(super) enum Turn<T> {
    Done(T),
    Mine(Option<Lease>),
}

impl Puller {
    /// Whether a shared entry written at `at` is within `tag_ttl`. One dated
    /// ahead of this replica's clock (skewed or forged) would stay fresh
    /// for longer: refused.
    pub(super) fn fresh(&self, at: SystemTime) -> bool {
        at <= self.clock.now() + SKEW && age(self.clock.as_ref(), at) < self.tag_ttl
    }

    /// Takes the lease on `what`, or waits for the replica holding it to
    /// produce what `ready` looks for. A lease that ends without a result
    /// (its holder failed or died) is taken again; past `cluster.lease_wait`
    /// the work is done here regardless. Without Redis: always `Mine`.
    pub(super) async fn take_turn<T, F, Fut>(&self, what: &str, mut ready: F) -> Turn<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let Some(cluster) = &self.cluster else {
            return Turn::Mine(None);
        };
        let deadline = tokio::time::Instant::now() + cluster.lease_wait();
        loop {
            match cluster.lease(what).await {
                Ok(lease) => return Turn::Mine(lease),
                Err(()) => {
                    if let Some(v) = cluster.wait_for(what, deadline, &mut ready).await {
                        return Turn::Done(v);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Turn::Mine(None);
                    }
                }
            }
        }
    }

    /// The manifest from the shared bucket, checked against its digest,
    /// kept in memory and on disk once read.
    pub(super) async fn shared_manifest(&self, digest: &Digest) -> Option<Arc<ManifestContent>> {
        let shared = self.shared.as_ref()?;
        let (media_type, bytes) = shared
            .read_manifest(digest, crate::upstream::MAX_MANIFEST_BYTES as u64)
            .await?;
        let content = Arc::new(ManifestContent::new(digest.clone(), media_type, bytes).ok()?);
        if let Err(e) = self
            .store
            .put_manifest(digest, content.media_type(), content.bytes())
            .await
        {
            tracing::warn!(%digest, error = %e, "storing manifest failed");
        }
        self.hot.insert(digest.clone(), Arc::clone(&content));
        Some(content)
    }

    /// Tells the other replicas what an allowed manifest names here, so
    /// that a blob or child asked of them can be re-derived from it.
    pub(super) async fn share_references(
        &self,
        target: &Target,
        manifest: &Manifest,
        digest: &Digest,
        artifact: bool,
    ) {
        if self.cluster.is_none() && self.shared.is_none() {
            return;
        }
        let (subject, named): (Subject, Vec<Digest>) = match &manifest.kind {
            crate::oci::ManifestKind::Image { .. } => (
                Subject::Blob,
                manifest.references().map(|d| d.digest.clone()).collect(),
            ),
            // A signature artifact index grants no children (they are judged alone).
            crate::oci::ManifestKind::Index { .. } if artifact => return,
            crate::oci::ManifestKind::Index { manifests } => (
                Subject::Child,
                manifests.iter().map(|d| d.digest.clone()).collect(),
            ),
        };
        let (upstream, repo) = (&target.upstream.name, &target.repo);
        if let Some(cluster) = &self.cluster {
            cluster
                .add_references(subject, upstream, repo, &named, digest)
                .await;
        }
        // Also in the bucket, for a replica that cannot reach Redis.
        if let Some(shared) = &self.shared {
            shared
                .add_references(subject, upstream, repo, &named, digest)
                .await;
        }
    }

    /// Manifests other replicas found naming `subject` here that this
    /// replica has not decided: candidates to decide, not grantors.
    pub(super) async fn shared_grantors(
        &self,
        kind: Grant,
        subject: &RepoDigest,
        tried: &[Digest],
    ) -> Vec<Digest> {
        let kind = match kind {
            Grant::Blob => Subject::Blob,
            Grant::Child => Subject::Child,
        };
        let (upstream, repo, named) = (&subject.0, &subject.1, &subject.2);
        let mut found = match &self.cluster {
            Some(cluster) => cluster.references(kind, upstream, repo, named).await,
            None => Vec::new(),
        };
        // Redis down, flushed or without the entry: the bucket's hints.
        if found.is_empty() {
            if let Some(shared) = &self.shared {
                found = shared.references(kind, upstream, repo, named).await;
            }
        }
        found.retain(|m| !tried.contains(m));
        found
    }
}

impl Puller {
    /// A signature-discovery document at `tag` (cosign's `.sig` and `.att`,
    /// the referrers fallback tag): what another replica found there within
    /// `tag_ttl` (its bytes from the bucket, digest-checked), else fetched
    /// here while the others wait, and shared. Only a name and content:
    /// every replica verifies the evidence itself; a stale or missing entry
    /// means less evidence (a denial), never more.
    pub(super) async fn discovery_manifest(
        &self,
        target: &Target,
        tag: &Tag,
        accept: &str,
    ) -> Result<FetchedManifest, UpstreamError> {
        let (Some(cluster), Some(shared)) = (&self.cluster, &self.shared) else {
            return target
                .upstream
                .fetch_manifest(&target.repo, &Reference::Tag(tag.clone()), accept)
                .await;
        };
        let (upstream, repo) = (&target.upstream.name, &target.repo);
        let found = || async {
            let (digest, at) = cluster.found(upstream, repo, tag).await?;
            if !self.fresh(at) {
                return None;
            }
            let Some(digest) = digest else {
                return Some(Err(UpstreamError::NotFound));
            };
            let most = crate::upstream::MAX_MANIFEST_BYTES as u64;
            let (media_type, bytes) = shared.read_manifest(&digest, most).await?;
            Some(Ok(FetchedManifest {
                bytes,
                content_type: Some(media_type),
                digest_header: Some(digest),
            }))
        };
        if let Some(done) = found().await {
            return done;
        }
        let what = format!("found:{upstream}/{repo}:{}", tag.as_str());
        let _lease = match self.take_turn(&what, found).await {
            Turn::Done(done) => return done,
            Turn::Mine(lease) => lease,
        };
        let fetched = target
            .upstream
            .fetch_manifest(repo, &Reference::Tag(tag.clone()), accept)
            .await;
        let at = self.clock.now();
        match &fetched {
            Ok(f) => {
                // Shared only with a media type to parse it by again.
                if let Some(media_type) = &f.content_type {
                    let digest = Digest::sha256_of(&f.bytes);
                    shared.put_manifest(&digest, media_type, &f.bytes).await;
                    cluster
                        .put_found(upstream, repo, tag, Some(&digest), at, self.tag_ttl)
                        .await;
                }
            }
            Err(UpstreamError::NotFound) => {
                cluster
                    .put_found(upstream, repo, tag, None, at, self.tag_ttl)
                    .await;
            }
            Err(_) => {}
        }
        fetched
    }
}
