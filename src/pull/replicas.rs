//! Working with other replicas (decision 0013): content from the shared
//! bucket, one replica doing a piece of work while the others wait for it,
//! and references that let any replica re-derive a grant. Nothing here
//! grants anything: content read back is digest-checked, and a reference
//! only names a manifest that this replica then decides itself.

use super::*;
use crate::cluster::{Lease, Subject};
use crate::oci::MediaType;
use crate::upstream::FetchedManifest;

/// How long a waiter pauses before taking a lease that ended without a result.
const RETAKE_PAUSE: Duration = Duration::from_millis(20);

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
    /// the work is done here regardless. Once the lease is taken, `ready` is
    /// asked again before the work is this replica's: a result published
    /// after the caller last looked (its holder released the lease since)
    /// is used, not fetched a second time. Without Redis: `ready`, else `Mine`.
    pub(super) async fn take_turn<T, F, Fut>(&self, what: &str, mut ready: F) -> Turn<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let lease = match &self.cluster {
            None => None,
            Some(cluster) => {
                let deadline = tokio::time::Instant::now() + cluster.lease_wait();
                loop {
                    match cluster.lease(what).await {
                        Ok(lease) => break lease,
                        Err(()) => {
                            if let Some(v) = cluster.wait_for(what, deadline, &mut ready).await {
                                return Turn::Done(v);
                            }
                            if tokio::time::Instant::now() >= deadline {
                                // `wait_for` has just looked.
                                return Turn::Mine(None);
                            }
                            // The lease ended without a result: asked again, not at once.
                            tokio::time::sleep(RETAKE_PAUSE).await;
                        }
                    }
                }
            }
        };
        match ready().await {
            Some(v) => Turn::Done(v),
            None => Turn::Mine(lease),
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

/// What signature discovery found under a name: a document, shared with
/// the other replicas when `share`.
pub(super) struct Document {
    pub media_type: Option<MediaType>,
    pub bytes: bytes::Bytes,
    pub share: bool,
}

impl Puller {
    /// A signature-discovery document at `tag` (cosign's `.sig` and `.att`,
    /// the referrers fallback tag), through [`Puller::shared_document`].
    pub(super) async fn discovery_manifest(
        &self,
        target: &Target,
        tag: &Tag,
        accept: &str,
    ) -> Result<FetchedManifest, UpstreamError> {
        let fetch = async {
            let fetched = target
                .upstream
                .fetch_manifest(&target.repo, &Reference::Tag(tag.clone()), accept)
                .await;
            match fetched {
                Ok(f) => Ok(Some(Document {
                    share: f.content_type.is_some(),
                    media_type: f.content_type,
                    bytes: f.bytes,
                })),
                Err(UpstreamError::NotFound) => Ok(None),
                Err(e) => Err(e),
            }
        };
        match self.shared_document(target, tag.as_str(), fetch).await? {
            Some(d) => Ok(FetchedManifest {
                bytes: d.bytes,
                content_type: d.media_type,
                digest_header: None,
            }),
            None => Err(UpstreamError::NotFound),
        }
    }

    /// The referrers of `subject` as discovery reads them (unfiltered),
    /// through [`Puller::shared_document`]; shared only when complete.
    pub(super) async fn discovery_referrers(
        &self,
        target: &Target,
        subject: &Digest,
    ) -> Result<Referrers, PullError> {
        let index = MediaType::parse(crate::oci::media::OCI_INDEX)
            .map_err(|_| PullError::Internal("index media type".into()))?;
        let mut complete = true;
        let fetch = async {
            let r = self.referrers(target, subject, None).await?;
            complete = r.complete;
            Ok::<_, PullError>(Some(Document {
                media_type: Some(index),
                bytes: r.body,
                share: r.complete,
            }))
        };
        let name = format!("referrers/{subject}");
        let found = self.shared_document(target, &name, fetch).await?;
        Ok(Referrers {
            body: found.map_or_else(|| bytes::Bytes::from_static(EMPTY_INDEX), |d| d.bytes),
            filtered: false,
            complete,
        })
    }

    /// What another replica's discovery found under `name` in this
    /// repository within `tag_ttl` (the document's bytes from the bucket,
    /// digest-checked; or that there was none), else `fetch`ed here while
    /// the others wait, and shared. Only a name and content: every replica
    /// verifies the evidence itself, so a stale or missing entry means
    /// other evidence or none (a denial), never more.
    async fn shared_document<E, F>(
        &self,
        target: &Target,
        name: &str,
        fetch: F,
    ) -> Result<Option<Document>, E>
    where
        F: std::future::Future<Output = Result<Option<Document>, E>>,
    {
        let (Some(cluster), Some(shared)) = (&self.cluster, &self.shared) else {
            return fetch.await;
        };
        let (upstream, repo) = (&target.upstream.name, &target.repo);
        let found = || async {
            let (digest, at) = cluster.found(upstream, repo, name).await?;
            if !self.fresh(at) {
                return None;
            }
            let Some(digest) = digest else {
                return Some(None);
            };
            let most = crate::upstream::MAX_MANIFEST_BYTES as u64;
            let (media_type, bytes) = shared.read_manifest(&digest, most).await?;
            Some(Some(Document {
                media_type: Some(media_type),
                bytes,
                share: false,
            }))
        };
        let what = format!("found:{upstream}/{repo}:{name}");
        let _lease = match self.take_turn(&what, found).await {
            Turn::Done(done) => return Ok(done),
            Turn::Mine(lease) => lease,
        };
        let fetched = fetch.await?;
        let at = self.clock.now();
        match &fetched {
            Some(Document {
                media_type: Some(media_type),
                bytes,
                share: true,
            }) => {
                // Named only once the bucket holds it.
                let digest = Digest::sha256_of(bytes);
                if shared.put_manifest(&digest, media_type, bytes).await {
                    cluster
                        .put_found(upstream, repo, name, Some(&digest), at, self.tag_ttl)
                        .await;
                }
            }
            Some(_) => {}
            None => {
                cluster
                    .put_found(upstream, repo, name, None, at, self.tag_ttl)
                    .await;
            }
        }
        Ok(fetched)
    }
}

/// Referrers of a subject that has none.
const EMPTY_INDEX: &[u8] =
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
