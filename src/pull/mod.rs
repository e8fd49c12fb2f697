//! Pull orchestration: resolve a tag once, fetch exact manifest bytes, ask
//! the [`Gate`] for a verdict, cache it; stream blobs while storing them.
//! Concurrent identical requests share one upstream fetch.

mod blob;
mod budget;
mod discover;
mod error;
mod flight;
mod gating;
mod grants;
mod index;
mod replicas;
mod shape;
mod tags;
mod verdicts;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::cache::{ContentStore, SharedStore};
use crate::clock::{Clock, age};
use crate::cluster::Cluster;
use crate::config::{CacheConfig, LimitsConfig};
use crate::metrics::{Cache, Metrics};
use crate::oci::UpstreamName;
use crate::oci::media::DEFAULT_MANIFEST_ACCEPT;
use crate::oci::{Digest, Manifest, ManifestContent, Reference, RepositoryName, Tag};
use crate::upstream::{Upstream, UpstreamError};
use crate::verify::artifact;
use crate::verify::evidence::Evidence;
use crate::verify::{Denial, Gate, Reached, Reason, VerifiedManifest};
use grants::Grants;
use verdicts::Verdicts;

pub use blob::{BlobBody, BlobHead, ByteRange};
pub use error::PullError;
pub use flight::Flights;
pub use index::{Referrers, TagsPage, TagsQuery};

/// An upstream and a repository in it: where a request is routed.
#[derive(Clone)]
pub struct Target {
    pub upstream: Arc<Upstream>,
    pub repo: RepositoryName,
}

impl Target {
    fn key(&self, digest: &Digest) -> RepoDigest {
        (
            self.upstream.name.clone(),
            self.repo.clone(),
            digest.clone(),
        )
    }
}

type RepoDigest = (UpstreamName, RepositoryName, Digest);
/// A verdict is valid for one generation of policy and trust: installing a
/// new gate (a reload, a trust change) makes every older verdict unreachable.
/// It also depends on how the manifest was reached: a child allowed because
/// a signed index named it is not thereby allowed when asked for directly,
/// and a denial of a direct request does not stand for the signed index.
type VerdictKey = (RepoDigest, u64, Reached);
type TagKey = (UpstreamName, RepositoryName, Tag);

/// (repository, blob) and (repository, child) grants kept, each; the least
/// recently used go first (a client then asks for the manifest again).
const GRANTS: u64 = 500_000;

/// How many indexes deep a chain of grants is followed.
const MAX_GRANT_DEPTH: usize = 3;

/// Grantors decided again, at most, when a grant's verdicts have expired.
const REDECIDE: usize = 2;

/// Indexes above an image, at most: an index of indexes of images passes,
/// an index a third level down is denied `limit_exceeded`.
pub const MAX_INDEX_NESTING: usize = 2;

/// Descriptors one manifest may list (an index's manifests, an image's
/// layers); more is denied `limit_exceeded`.
pub const MAX_ENTRIES: usize = 1024;

/// Which grants a subject is looked up in.
#[derive(Clone, Copy)]
enum Grant {
    Blob,
    Child,
}

#[derive(Clone)]
struct TagEntry {
    digest: Digest,
    checked_at: SystemTime,
    verified: bool,
}

type Verdict = Result<VerifiedManifest, Denial>;

pub struct Puller {
    store: Arc<ContentStore>,
    hot: moka::sync::Cache<Digest, Arc<ManifestContent>>,
    tags: moka::sync::Cache<TagKey, TagEntry>,
    /// Verified tags the upstream moved to another digest: (the digest
    /// they named, the one they name now), taken by the first decision on
    /// the new one through the tag, which records it (`take_tag_move`).
    moved: moka::sync::Cache<TagKey, (Digest, Digest)>,
    /// (upstream, repo, digest) the upstream is known to hold.
    known: moka::sync::Cache<RepoDigest, ()>,
    /// The largest size allowed image manifests of the repository declare
    /// for a blob: what a fill of it may take at most.
    declared: moka::sync::Cache<RepoDigest, u64>,
    /// Blobs named by allowed manifests of the same repository.
    blob_grants: Grants,
    /// Manifests named by allowed indexes of the same repository.
    child_grants: Grants,
    verdicts: Verdicts,
    tag_flights: Flights<TagKey, Result<Digest, PullError>>,
    verdict_flights: Flights<VerdictKey, Result<Verdict, PullError>>,
    fills: blob::Fills,
    /// The current gate and its generation, swapped whole on reload.
    gate: std::sync::RwLock<(Arc<Gate>, u64)>,
    clock: Arc<dyn Clock>,
    tag_ttl: Duration,
    max_stale: Duration,
    /// What a fill may take when nothing declares the blob's size.
    max_blob_bytes: u64,
    /// Decision bounds, one set per upstream (created on first use).
    budgets: Mutex<HashMap<UpstreamName, Arc<budget::Budget>>>,
    limits: LimitsConfig,
    /// The bucket replicas share content in, and the Redis they coordinate
    /// through (either may be absent: a single instance has neither).
    shared: Option<Arc<SharedStore>>,
    cluster: Option<Arc<Cluster>>,
    metrics: Arc<Metrics>,
}

/// What a replica shares with the others (decision 0013).
#[derive(Default)]
pub struct Shared {
    pub store: Option<Arc<SharedStore>>,
    pub cluster: Option<Arc<Cluster>>,
}

impl Puller {
    pub fn new(
        config: &CacheConfig,
        limits: &LimitsConfig,
        store: Arc<ContentStore>,
        shared: Shared,
        gate: Gate,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Puller {
        Puller {
            hot: moka::sync::Cache::builder()
                .max_capacity(config.memory_bytes)
                .weigher(|_: &Digest, m: &Arc<ManifestContent>| {
                    u32::try_from(m.bytes().len()).unwrap_or(u32::MAX)
                })
                .build(),
            tags: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.max_stale)
                .build(),
            moved: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            known: moka::sync::Cache::builder().max_capacity(1_000_000).build(),
            declared: moka::sync::Cache::builder().max_capacity(1_000_000).build(),
            blob_grants: Grants::new(GRANTS, config.verdict_ttl.max(config.max_stale)),
            child_grants: Grants::new(GRANTS, config.verdict_ttl.max(config.max_stale)),
            verdicts: Verdicts::new(
                100_000,
                config.verdict_ttl,
                config.deny_ttl,
                Arc::clone(&clock),
            ),
            tag_flights: Flights::new(),
            verdict_flights: Flights::new(),
            fills: blob::Fills::default(),
            store,
            gate: std::sync::RwLock::new((Arc::new(gate), 1)),
            clock,
            tag_ttl: config.tag_ttl,
            max_stale: config.max_stale,
            max_blob_bytes: config.max_blob_bytes,
            budgets: Mutex::new(HashMap::new()),
            limits: limits.clone(),
            shared: shared.store,
            cluster: shared.cluster,
            metrics,
        }
    }

    /// The gate in force and its generation.
    pub fn gate(&self) -> (Arc<Gate>, u64) {
        let g = self.gate.read().unwrap_or_else(|e| e.into_inner());
        (Arc::clone(&g.0), g.1)
    }

    /// Puts a new gate (policies, exceptions, trust) in force. Verdicts and
    /// the grants they made under earlier generations are retired; decisions
    /// already under way finish under the gate they started with and are
    /// recorded under its generation, where nothing looks for them.
    pub fn install_gate(&self, gate: Gate) -> u64 {
        let generation = {
            let mut g = self.gate.write().unwrap_or_else(|e| e.into_inner());
            let generation = g.1 + 1;
            *g = (Arc::new(gate), generation);
            generation
        };
        self.verdicts.clear();
        self.blob_grants.clear();
        self.child_grants.clear();
        generation
    }

    /// The decision bounds of `target`'s upstream.
    fn budget(&self, target: &Target) -> Arc<budget::Budget> {
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        let budget = budgets
            .entry(target.upstream.name.clone())
            .or_insert_with(|| {
                Arc::new(budget::Budget::new(
                    self.limits.decisions,
                    self.limits.decision_bytes,
                    Arc::clone(&self.metrics),
                ))
            });
        Arc::clone(budget)
    }

    /// The manifest for `reference`, if policy allows serving it.
    pub async fn manifest(
        self: &Arc<Self>,
        target: &Target,
        reference: &Reference,
    ) -> Result<VerifiedManifest, PullError> {
        self.manifest_served(target, reference).await.map(|s| s.0)
    }

    /// [`manifest`](Self::manifest), and whether the tag was resolved
    /// through a mapping past `tag_ttl` because the upstream was
    /// unavailable (served stale: how long ago it was last checked).
    pub async fn manifest_served(
        self: &Arc<Self>,
        target: &Target,
        reference: &Reference,
    ) -> Result<(VerifiedManifest, Option<Duration>), PullError> {
        let named = match reference {
            Reference::Digest(d) => Some(d),
            Reference::Tag(_) => None,
        };
        self.precheck(target).map_err(|e| e.about(named))?;
        let (digest, stale) = match reference {
            Reference::Digest(d) => (d.clone(), None),
            Reference::Tag(t) => self.resolve_tag(target, t).await?,
        };
        let verdict = self
            .verdict(target, reference, digest.clone(), 0)
            .await
            .map_err(|e| e.about(Some(&digest)))?;
        Ok((verdict, stale))
    }

    /// The verdict on `digest` (reached through `reference`) under the gate in force.
    async fn verdict(
        self: &Arc<Self>,
        target: &Target,
        reference: &Reference,
        digest: Digest,
        depth: usize,
    ) -> Result<VerifiedManifest, PullError> {
        let (gate, generation) = self.gate();
        let subject = target.key(&digest);
        let local = self
            .rederived(target, Grant::Child, &subject, generation, depth, false)
            .await
            .unwrap_or(false);
        let mut verdict = self
            .verdict_as(target, reference, &digest, &gate, generation, local)
            .await?;
        // Denied as it stands: perhaps an index another replica allowed
        // names it. Asked only then, so an allowed manifest costs no lookup.
        if verdict.is_err()
            && !local
            && self
                .rederived(target, Grant::Child, &subject, generation, depth, true)
                .await
                .unwrap_or(false)
        {
            verdict = self
                .verdict_as(target, reference, &digest, &gate, generation, true)
                .await?;
        }
        let verified = verdict.map_err(PullError::Denied)?;
        if let Reference::Tag(tag) = reference {
            self.mark_tag_verified(target, tag, verified.content().digest());
        }
        Ok(verified)
    }

    /// The verdict on `digest` as reached directly, or through an allowed
    /// index (`named`): cached, else decided once however many ask.
    async fn verdict_as(
        self: &Arc<Self>,
        target: &Target,
        reference: &Reference,
        digest: &Digest,
        gate: &Arc<Gate>,
        generation: u64,
        named: bool,
    ) -> Result<Verdict, PullError> {
        let reached = if named {
            Reached::ThroughAllowedIndex
        } else {
            Reached::Directly
        };
        let key = (target.key(digest), generation, reached);
        let cached = self.verdicts.get(&key);
        self.metrics.cache_lookup(Cache::Verdict, cached.is_some());
        match cached {
            Some(v) => Ok(v),
            None => {
                let this = Arc::clone(self);
                let t = target.clone();
                let d = digest.clone();
                let gate = Arc::clone(gate);
                let flight =
                    move || async move { this.decide(&t, &d, gate, generation, reached).await };
                let decided = self.verdict_flights.run(key, flight, cancelled()).await;
                // An overload says nothing about the mapping: keep it, so a
                // retry does not fetch the tag again (a pull on Docker Hub).
                let overload = matches!(
                    decided,
                    Err(PullError::Busy(_) | PullError::Upstream(UpstreamError::Saturated))
                );
                if let (Err(_), Reference::Tag(tag), false) = (&decided, reference, overload) {
                    self.forget_unverified_tag(target, tag, digest);
                }
                decided
            }
        }
    }

    /// Denies requests for repositories no policy could allow, before any
    /// upstream request.
    pub fn precheck(&self, target: &Target) -> Result<(), PullError> {
        self.gate()
            .0
            .precheck(&target.upstream.name, &target.repo, self.clock.now())
            .map_err(PullError::Denied)
    }

    /// Fetches (or loads) the content, asks the gate, and caches the verdict.
    /// Upstream faults are returned as errors and never cached.
    async fn decide(
        &self,
        target: &Target,
        digest: &Digest,
        gate: Arc<Gate>,
        generation: u64,
        reached: Reached,
    ) -> Result<Verdict, PullError> {
        let key = (target.key(digest), generation, reached);
        // A flight that finished after the caller's cache lookup has stored its verdict.
        if let Some(v) = self.verdicts.get(&key) {
            return Ok(v);
        }
        let budget = self.budget(target);
        let deciding = budget.decision().await?;
        let content = self.content(target, digest).await?;
        let (upstream, repo) = (&target.upstream.name, &target.repo);
        let manifest =
            Manifest::parse(content.bytes(), Some(content.media_type())).map_err(|error| {
                PullError::ManifestInvalid {
                    error,
                    digest: Some(digest.clone()),
                }
            })?;
        if let Some(limit) = self.shape_limit(target, digest, &manifest, generation, reached) {
            // A bound that protects the proxy holds in every mode.
            let verdict = Err(Denial::new(Reason::LimitExceeded, limit).of(digest.clone()));
            self.verdicts.insert(key, verdict.clone());
            return Ok(verdict);
        }
        let proof = match artifact::claims(&manifest) {
            true => Some(self.prove_artifact(target, &manifest).await?),
            false => None,
        };
        let (verdict, artifact) = match proof {
            Some(Ok(proof)) => (
                gate.pass_artifact(upstream, repo, content, proof, self.clock.now()),
                true,
            ),
            disguised => {
                let mut verdict = self
                    .judge(target, &gate, content, reached, deciding)
                    .await?;
                // A manifest labelled as a signature artifact that is not one
                // was judged as what it is; the denial says why.
                if let (Some(Err(why)), Err(denial)) = (disguised, &mut verdict) {
                    denial.message = format!(
                        "{} (it is labelled a signature artifact, but {why})",
                        denial.message
                    );
                }
                (verdict, false)
            }
        };
        // Grants first, here and for the other replicas, then the verdict:
        // a request served from the cached verdict may send its client to
        // another replica for a blob at once, and that replica must find
        // the reference. (Grants count only while the verdict lives, so
        // recording them before it is inert.)
        if verdict.is_ok() {
            // Where blobs are not gated, grants would never be asked for.
            let grantor = gate
                .gates_blobs(upstream, repo)
                .then(|| (digest.clone(), reached));
            let shares = grantor.is_some();
            self.remember_references(target, &manifest, generation, grantor, artifact);
            if shares {
                self.share_references(target, &manifest, digest, artifact)
                    .await;
            }
        }
        self.verdicts.insert(key, verdict.clone());
        Ok(verdict)
    }

    /// Discovers what the gate needs and asks it about an ordinary manifest.
    async fn judge(
        &self,
        target: &Target,
        gate: &Arc<Gate>,
        content: Arc<ManifestContent>,
        reached: Reached,
        deciding: budget::Held,
    ) -> Result<Verdict, PullError> {
        let (upstream, repo) = (&target.upstream.name, &target.repo);
        let needs = gate.needs(upstream, repo, reached);
        let (evidence, held) = if needs.signatures {
            self.discover(target, content.digest(), needs).await?
        } else {
            (Evidence::default(), Vec::new())
        };
        let started = std::time::Instant::now();
        // Verification and condition evaluation are CPU work: they run on
        // the blocking pool, never on the threads that serve cached
        // requests. The decision's place and bytes go with the work, so
        // they stay held until it ends even if nobody waits for it.
        let (upstream, repo) = (upstream.clone(), repo.clone());
        let (gate, now) = (Arc::clone(gate), self.clock.now());
        let verdict = tokio::task::spawn_blocking(move || {
            let _held = (deciding, held);
            gate.decide(&upstream, &repo, content, &evidence, reached, now)
        })
        .await
        .map_err(|e| PullError::Internal(format!("decision failed: {e}")))?;
        self.metrics
            .verification_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(verdict)
    }

    /// The manifest bytes for `digest`, from memory, disk or the upstream.
    /// Content cached for another repository is served for this one only
    /// after the upstream confirms this repository holds it.
    async fn content(
        &self,
        target: &Target,
        digest: &Digest,
    ) -> Result<Arc<ManifestContent>, PullError> {
        if let Some(c) = self.hot.get(digest) {
            self.metrics.cache_lookup(Cache::ManifestMemory, true);
            self.confirm(target, digest, true).await?;
            return Ok(c);
        }
        self.metrics.cache_lookup(Cache::ManifestMemory, false);
        if let Some((media_type, bytes)) = self.store.read_manifest(digest).await {
            self.metrics.cache_lookup(Cache::ManifestDisk, true);
            self.confirm(target, digest, true).await?;
            let content = ManifestContent::new(digest.clone(), media_type, bytes)
                .map_err(|_| PullError::Internal("stored manifest failed its digest".into()))?;
            let content = Arc::new(content);
            self.hot.insert(digest.clone(), Arc::clone(&content));
            return Ok(content);
        }
        self.metrics.cache_lookup(Cache::ManifestDisk, false);
        // Another replica may have fetched it, or be fetching it now.
        let what = format!("manifest:{}:{digest}", target.upstream.name);
        let _lease = match self.take_turn(&what, || self.shared_manifest(digest)).await {
            replicas::Turn::Done(content) => {
                self.confirm(target, digest, true).await?;
                return Ok(content);
            }
            replicas::Turn::Mine(lease) => lease,
        };
        let fetched = target
            .upstream
            .fetch_manifest(
                &target.repo,
                &Reference::Digest(digest.clone()),
                DEFAULT_MANIFEST_ACCEPT,
            )
            .await?;
        let content = self.admit(target, digest.clone(), fetched).await?;
        Ok(content)
    }

    /// Checks bytes from the upstream against `digest` and their declared
    /// type, then stores them. Nothing that fails a check is cached.
    async fn admit(
        &self,
        target: &Target,
        digest: Digest,
        fetched: crate::upstream::FetchedManifest,
    ) -> Result<Arc<ManifestContent>, PullError> {
        if !digest.matches(&fetched.bytes) {
            return Err(PullError::Upstream(target.upstream.record_fault(
                UpstreamError::DigestMismatch {
                    expected: digest.clone(),
                    actual: Digest::of(digest.algorithm(), &fetched.bytes),
                },
            )));
        }
        let manifest =
            Manifest::parse(&fetched.bytes, fetched.content_type.as_ref()).map_err(|error| {
                PullError::ManifestInvalid {
                    error,
                    digest: Some(digest.clone()),
                }
            });
        let manifest = match manifest {
            Ok(m) => m,
            Err(e) => {
                target
                    .upstream
                    .record_fault(UpstreamError::BadResponse("invalid manifest".into()));
                return Err(e);
            }
        };
        let content = ManifestContent::new(digest.clone(), manifest.media_type, fetched.bytes)
            .map_err(|actual| {
                PullError::Upstream(target.upstream.record_fault(UpstreamError::DigestMismatch {
                    expected: digest.clone(),
                    actual,
                }))
            })?;
        if let Err(e) = self
            .store
            .put_manifest(&digest, content.media_type(), content.bytes())
            .await
        {
            // The content is verified and can still be served; only the disk copy is lost.
            tracing::warn!(%digest, error = %e, "storing manifest failed");
        }
        if let Some(shared) = &self.shared {
            shared
                .put_manifest(&digest, content.media_type(), content.bytes())
                .await;
        }
        let content = Arc::new(content);
        self.hot.insert(digest.clone(), Arc::clone(&content));
        self.know(target.key(&digest));
        Ok(content)
    }

    /// Makes sure the upstream holds `digest` in this repository, asking it
    /// with a HEAD when that is not known yet.
    async fn confirm(
        &self,
        target: &Target,
        digest: &Digest,
        manifest: bool,
    ) -> Result<(), PullError> {
        let key = target.key(digest);
        if self.known.contains_key(&key) {
            return Ok(());
        }
        if manifest {
            target
                .upstream
                .head_manifest(
                    &target.repo,
                    &Reference::Digest(digest.clone()),
                    DEFAULT_MANIFEST_ACCEPT,
                )
                .await?;
        } else {
            target.upstream.head_blob(&target.repo, digest).await?;
        }
        self.know(key);
        Ok(())
    }

    /// Records that the upstream holds `key`.
    fn know(&self, key: RepoDigest) {
        self.known.insert(key, ());
    }

    /// Records that an allowed image manifest declares `size` for a blob.
    /// The largest wins, atomically: a size is only ever an upper bound on
    /// a fill, so a manifest declaring more cannot break a pull.
    fn declare(&self, key: RepoDigest, size: u64) {
        self.declared
            .entry(key)
            .and_compute_with(|kept| match kept {
                Some(k) if *k.value() >= size => moka::ops::compute::Op::Nop,
                _ => moka::ops::compute::Op::Put(size),
            });
    }

    /// The size allowed manifests of the repository declare for `digest`.
    fn declared_size(&self, target: &Target, digest: &Digest) -> Option<u64> {
        self.declared.get(&target.key(digest))
    }
}

fn cancelled<T>() -> Result<T, PullError> {
    Err(PullError::Internal("request work was cancelled".into()))
}
