//! Pull orchestration: resolve a tag once, fetch exact manifest bytes, ask
//! the [`Gate`] for a verdict, cache it; stream blobs while storing them.
//! Concurrent identical requests share one upstream fetch.

mod blob;
mod budget;
mod discover;
mod flight;
mod grants;
mod index;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::cache::ContentStore;
use crate::clock::{Clock, age};
use crate::config::{CacheConfig, LimitsConfig};
use crate::metrics::Metrics;
use crate::oci::UpstreamName;
use crate::oci::media::DEFAULT_MANIFEST_ACCEPT;
use crate::oci::{Digest, Manifest, ManifestContent, Reference, RepositoryName, Tag};
use crate::upstream::{Upstream, UpstreamError};
use crate::verify::artifact;
use crate::verify::evidence::Evidence;
use crate::verify::{Denial, Gate, Reached, Reason, VerifiedManifest};
use grants::Grants;

pub use blob::{BlobBody, BlobHead, ByteRange};
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

#[derive(Debug, Clone, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("denied: {}", .0.message)]
    Denied(Denial),
    #[error("upstream sent an invalid manifest: {error}")]
    ManifestInvalid {
        error: crate::oci::media::ManifestError,
        /// The digest of the refused bytes, once known.
        digest: Option<Digest>,
    },
    #[error("requested range cannot be satisfied")]
    RangeNotSatisfiable { size: u64 },
    #[error("the proxy failed: {0}")]
    Internal(String),
    /// A bound on decisions in flight was exhausted; retry shortly.
    #[error("{0}")]
    Busy(String),
}

impl PullError {
    /// Names the manifest a denial or refusal was about, if it does not yet.
    fn about(self, digest: Option<&Digest>) -> PullError {
        match self {
            PullError::Denied(mut d) => {
                d.digest = d.digest.or_else(|| digest.cloned());
                PullError::Denied(d)
            }
            PullError::ManifestInvalid { error, digest: d } => PullError::ManifestInvalid {
                error,
                digest: d.or_else(|| digest.cloned()),
            },
            other => other,
        }
    }
}

#[derive(Clone)]
struct TagEntry {
    digest: Digest,
    checked_at: SystemTime,
    verified: bool,
}

type Verdict = Result<VerifiedManifest, Denial>;

/// Expires allow verdicts after `verdict_ttl` and denials after `deny_ttl`.
struct VerdictExpiry {
    allow: Duration,
    deny: Duration,
}

impl moka::Expiry<VerdictKey, Verdict> for VerdictExpiry {
    fn expire_after_create(
        &self,
        _k: &VerdictKey,
        v: &Verdict,
        _at: std::time::Instant,
    ) -> Option<Duration> {
        Some(match v {
            // A verdict resting on an exception ends when the exception does.
            Ok(m) => match m.exception_expires() {
                Some(t) => t
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
                    .min(self.allow),
                None => self.allow,
            },
            Err(_) => self.deny,
        })
    }
}

pub struct Puller {
    store: Arc<ContentStore>,
    hot: moka::sync::Cache<Digest, Arc<ManifestContent>>,
    tags: moka::sync::Cache<TagKey, TagEntry>,
    /// (upstream, repo, digest) the upstream is known to hold.
    known: moka::sync::Cache<RepoDigest, ()>,
    /// The largest size allowed image manifests of the repository declare
    /// for a blob: what a fill of it may take at most.
    declared: moka::sync::Cache<RepoDigest, u64>,
    /// Blobs named by allowed manifests of the same repository.
    blob_grants: Grants,
    /// Manifests named by allowed indexes of the same repository.
    child_grants: Grants,
    verdicts: moka::sync::Cache<VerdictKey, Verdict>,
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
    metrics: Arc<Metrics>,
}

impl Puller {
    pub fn new(
        config: &CacheConfig,
        limits: &LimitsConfig,
        store: Arc<ContentStore>,
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
            known: moka::sync::Cache::builder().max_capacity(1_000_000).build(),
            declared: moka::sync::Cache::builder().max_capacity(1_000_000).build(),
            blob_grants: Grants::new(GRANTS, config.verdict_ttl.max(config.max_stale)),
            child_grants: Grants::new(GRANTS, config.verdict_ttl.max(config.max_stale)),
            verdicts: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .expire_after(VerdictExpiry {
                    allow: config.verdict_ttl,
                    deny: config.deny_ttl,
                })
                .build(),
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
        self.verdicts.invalidate_all();
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

    fn hit(&self, cache: &str, hit: bool) {
        let m = if hit {
            &self.metrics.cache_hits
        } else {
            &self.metrics.cache_misses
        };
        m.with_label_values(&[cache]).inc();
    }

    /// The manifest for `reference`, if policy allows serving it.
    pub async fn manifest(
        self: &Arc<Self>,
        target: &Target,
        reference: &Reference,
    ) -> Result<VerifiedManifest, PullError> {
        let named = match reference {
            Reference::Digest(d) => Some(d),
            Reference::Tag(_) => None,
        };
        self.precheck(target).map_err(|e| e.about(named))?;
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => self.resolve_tag(target, t).await?,
        };
        self.verdict(target, reference, digest.clone(), 0)
            .await
            .map_err(|e| e.about(Some(&digest)))
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
        let named = self
            .rederived(
                target,
                Grant::Child,
                &target.key(&digest),
                generation,
                depth,
            )
            .await;
        let reached = if named {
            Reached::ThroughAllowedIndex
        } else {
            Reached::Directly
        };
        let key = (target.key(&digest), generation, reached);
        let cached = self.verdicts.get(&key);
        self.hit("verdict", cached.is_some());
        let verdict = match cached {
            Some(v) => v,
            None => {
                let this = Arc::clone(self);
                let t = target.clone();
                let d = digest.clone();
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
                    self.forget_unverified_tag(target, tag, &digest);
                }
                decided?
            }
        };
        let verified = verdict.map_err(PullError::Denied)?;
        if let Reference::Tag(tag) = reference {
            self.mark_tag_verified(target, tag, verified.content().digest());
        }
        Ok(verified)
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
        self.verdicts.insert(key, verdict.clone());
        if verdict.is_ok() {
            // Where blobs are not gated, grants would never be asked for.
            let grantor = gate
                .gates_blobs(upstream, repo)
                .then(|| (digest.clone(), reached));
            self.remember_references(target, &manifest, generation, grantor, artifact);
        }
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
            self.hit("manifest_memory", true);
            self.confirm(target, digest, true).await?;
            return Ok(c);
        }
        self.hit("manifest_memory", false);
        if let Some((media_type, bytes)) = self.store.read_manifest(digest).await {
            self.hit("manifest_disk", true);
            self.confirm(target, digest, true).await?;
            let content = ManifestContent::new(digest.clone(), media_type, bytes)
                .map_err(|_| PullError::Internal("stored manifest failed its digest".into()))?;
            let content = Arc::new(content);
            self.hot.insert(digest.clone(), Arc::clone(&content));
            return Ok(content);
        }
        self.hit("manifest_disk", false);
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
                    expected: digest.to_string(),
                    actual: Digest::of(digest.algorithm(), &fetched.bytes).to_string(),
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
                    expected: digest.to_string(),
                    actual: actual.to_string(),
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

    /// Why a manifest is too large or too deeply nested to be served, if it is.
    fn shape_limit(
        &self,
        target: &Target,
        digest: &Digest,
        manifest: &Manifest,
        generation: u64,
        reached: Reached,
    ) -> Option<String> {
        let (entries, index) = match &manifest.kind {
            crate::oci::ManifestKind::Image { layers, .. } => (layers.len(), false),
            crate::oci::ManifestKind::Index { manifests } => (manifests.len(), true),
        };
        if entries > MAX_ENTRIES {
            return Some(format!(
                "the manifest lists {entries} descriptors, more than {MAX_ENTRIES}"
            ));
        }
        let nesting = match (index, reached) {
            (true, Reached::ThroughAllowedIndex) => {
                self.nesting(&target.key(digest), generation, 0)
            }
            _ => 0,
        };
        (nesting >= MAX_INDEX_NESTING).then(|| {
            format!("the index is nested {nesting} indexes deep; at most {MAX_INDEX_NESTING} indexes may stand above an image")
        })
    }

    /// How many indexes stand above `subject` along its shortest chain of
    /// live grants (0 when none names it).
    fn nesting(&self, subject: &RepoDigest, generation: u64, depth: usize) -> usize {
        if depth > MAX_GRANT_DEPTH {
            return depth;
        }
        self.child_grants
            .grantors(subject, generation)
            .into_iter()
            .filter(|g| self.live(subject, g.clone(), generation, 0))
            .map(|(index, reached)| match reached {
                Reached::Directly => 1,
                Reached::ThroughAllowedIndex => {
                    let above = (subject.0.clone(), subject.1.clone(), index);
                    1 + self.nesting(&above, generation, depth + 1)
                }
            })
            .min()
            .unwrap_or(0)
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

    /// Records what an allowed manifest (`grantor`, decided under
    /// `generation`) references: an image's blobs, and an index's children,
    /// are granted for this repository while its verdict lives. A signature
    /// artifact index grants no children: they are judged on their own.
    /// Only a manifest the gate vouches for (a grantor) marks what it names
    /// as held by the repository; elsewhere the upstream is asked.
    fn remember_references(
        &self,
        target: &Target,
        manifest: &Manifest,
        generation: u64,
        grantor: Option<grants::Grantor>,
        artifact: bool,
    ) {
        match &manifest.kind {
            crate::oci::ManifestKind::Image { .. } => {
                for d in manifest.references() {
                    self.declare(target.key(&d.digest), d.size);
                    if let Some(g) = &grantor {
                        self.know(target.key(&d.digest));
                        self.blob_grants
                            .record(target.key(&d.digest), generation, g.clone());
                    }
                }
            }
            crate::oci::ManifestKind::Index { manifests } => {
                for d in manifests {
                    if let (Some(g), false) = (&grantor, artifact) {
                        self.know(target.key(&d.digest));
                        self.child_grants
                            .record(target.key(&d.digest), generation, g.clone());
                    }
                }
            }
        }
    }

    /// Whether a manifest of this repository with a live allow verdict under
    /// `generation` names `subject` in `grants`. A manifest allowed because
    /// an index named it grants only while that index is allowed too.
    fn granted(
        &self,
        grants: &Grants,
        subject: &RepoDigest,
        generation: u64,
        depth: usize,
    ) -> bool {
        grants
            .grantors(subject, generation)
            .into_iter()
            .any(|g| self.live(subject, g, generation, depth))
    }

    /// Whether `grantor`, naming `subject`, has a live allow verdict under
    /// `generation` (and, if it was reached through an index, that index
    /// is still granted it).
    fn live(
        &self,
        subject: &RepoDigest,
        grantor: grants::Grantor,
        generation: u64,
        depth: usize,
    ) -> bool {
        let (manifest, reached) = grantor;
        let key = (subject.0.clone(), subject.1.clone(), manifest);
        let allowed = matches!(
            self.verdicts.get(&(key.clone(), generation, reached)),
            Some(Ok(_))
        );
        allowed
            && match reached {
                Reached::Directly => true,
                Reached::ThroughAllowedIndex => {
                    depth < MAX_GRANT_DEPTH
                        && self.granted(&self.child_grants, &key, generation, depth + 1)
                }
            }
    }

    /// As [`Puller::granted`], and when no grantor is live, the grantors
    /// not known to be denied (their verdict, or their index's, expired or
    /// was evicted) are decided again under the gate in force, as a
    /// manifest request would: a pull that outlasts a verdict's TTL goes on
    /// if the manifest is still allowed, and fails if it is not. Bounded in
    /// count and depth.
    fn rederived<'a>(
        self: &'a Arc<Self>,
        target: &'a Target,
        kind: Grant,
        subject: &'a RepoDigest,
        generation: u64,
        depth: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            let grants = match kind {
                Grant::Blob => &self.blob_grants,
                Grant::Child => &self.child_grants,
            };
            if self.granted(grants, subject, generation, 0) {
                return true;
            }
            if depth >= MAX_GRANT_DEPTH {
                return false;
            }
            let expired: Vec<Digest> = grants
                .grantors(subject, generation)
                .into_iter()
                .filter(|(m, reached)| {
                    let key = (subject.0.clone(), subject.1.clone(), m.clone());
                    !matches!(
                        self.verdicts.get(&(key, generation, *reached)),
                        Some(Err(_))
                    )
                })
                .map(|(m, _)| m)
                .take(REDECIDE)
                .collect();
            for m in expired {
                let decided = self
                    .verdict(target, &Reference::Digest(m.clone()), m, depth + 1)
                    .await;
                if decided.is_ok() && self.granted(grants, subject, generation, 0) {
                    return true;
                }
            }
            false
        })
    }

    /// Blobs flow only for manifests that passed: unless the policy admits
    /// unverified content, a blob must be named by a manifest of this
    /// repository that is allowed under the gate in force.
    async fn check_blob_allowed(
        self: &Arc<Self>,
        target: &Target,
        digest: &Digest,
    ) -> Result<(), PullError> {
        let (gate, generation) = self.gate();
        if gate.gates_blobs(&target.upstream.name, &target.repo)
            && !self
                .rederived(target, Grant::Blob, &target.key(digest), generation, 0)
                .await
        {
            let message = format!(
                "blob {digest} is not referenced by an allowed manifest of {}",
                target.repo
            );
            return Err(PullError::Denied(
                Denial::new(Reason::Unsigned, message).of(digest.clone()),
            ));
        }
        Ok(())
    }

    /// Tag → digest: from the tag cache within `tag_ttl`, else revalidated
    /// with a HEAD (which Docker Hub does not count as a pull). While the
    /// upstream is unavailable, a verified mapping is used up to `max_stale`.
    async fn resolve_tag(
        self: &Arc<Self>,
        target: &Target,
        tag: &Tag,
    ) -> Result<Digest, PullError> {
        let key: TagKey = (
            target.upstream.name.clone(),
            target.repo.clone(),
            tag.clone(),
        );
        if let Some(entry) = self.tags.get(&key) {
            if age(self.clock.as_ref(), entry.checked_at) < self.tag_ttl {
                self.hit("tag", true);
                return Ok(entry.digest);
            }
        }
        self.hit("tag", false);
        let this = Arc::clone(self);
        let t = target.clone();
        let k = key.clone();
        let flight = move || async move { this.revalidate_tag(&t, k).await };
        self.tag_flights.run(key, flight, cancelled()).await
    }

    async fn revalidate_tag(&self, target: &Target, key: TagKey) -> Result<Digest, PullError> {
        // A flight that finished after the caller's cache lookup has stored a
        // fresh mapping (it inserts before it leaves the flight map).
        if let Some(entry) = self.tags.get(&key) {
            if age(self.clock.as_ref(), entry.checked_at) < self.tag_ttl {
                return Ok(entry.digest);
            }
        }
        let reference = Reference::Tag(key.2.clone());
        let previous = self.tags.get(&key);
        // A tag seen before is revalidated with a HEAD (not a pull on Docker
        // Hub; the content is usually cached). A tag never seen is fetched
        // with one GET: its bytes are needed anyway, and that saves a round
        // trip on every cold pull.
        let digest = if previous.is_none() {
            self.fetch_by_tag(target, &reference).await?
        } else {
            let head = target
                .upstream
                .head_manifest(&target.repo, &reference, DEFAULT_MANIFEST_ACCEPT)
                .await;
            match head {
                Ok(h) => match h.digest {
                    Some(d) => d,
                    None => self.fetch_by_tag(target, &reference).await?,
                },
                Err(UpstreamError::NotFound) => {
                    self.tags.invalidate(&key);
                    return Err(UpstreamError::NotFound.into());
                }
                Err(e) => return self.stale_or(target, &key, e),
            }
        };
        let verified = previous.is_some_and(|p| p.verified && p.digest == digest);
        self.know(target.key(&digest));
        self.tags.insert(
            key,
            TagEntry {
                digest: digest.clone(),
                checked_at: self.clock.now(),
                verified,
            },
        );
        Ok(digest)
    }

    /// For upstreams whose HEAD lacks `Docker-Content-Digest`: GET by tag and
    /// hash the bytes ourselves (they are then cached by that digest).
    async fn fetch_by_tag(
        &self,
        target: &Target,
        reference: &Reference,
    ) -> Result<Digest, PullError> {
        let fetched = target
            .upstream
            .fetch_manifest(&target.repo, reference, DEFAULT_MANIFEST_ACCEPT)
            .await?;
        let digest = Digest::sha256_of(&fetched.bytes);
        if let Some(claimed) = &fetched.digest_header {
            if !claimed.matches(&fetched.bytes) {
                return Err(PullError::Upstream(target.upstream.record_fault(
                    UpstreamError::DigestMismatch {
                        expected: claimed.to_string(),
                        actual: Digest::of(claimed.algorithm(), &fetched.bytes).to_string(),
                    },
                )));
            }
        }
        self.admit(target, digest.clone(), fetched).await?;
        Ok(digest)
    }

    fn stale_or(
        &self,
        target: &Target,
        key: &TagKey,
        e: UpstreamError,
    ) -> Result<Digest, PullError> {
        if e.is_unavailable() {
            if let Some(entry) = self.tags.get(key) {
                if entry.verified && age(self.clock.as_ref(), entry.checked_at) < self.max_stale {
                    tracing::warn!(upstream = %target.upstream.name, repo = %target.repo, tag = %key.2, error = %e, "upstream unavailable; serving last verified tag mapping");
                    self.metrics
                        .stale_served
                        .with_label_values(&[target.upstream.name.as_str()])
                        .inc();
                    return Ok(entry.digest);
                }
            }
        }
        Err(e.into())
    }

    /// Drops a tag mapping whose digest could not be fetched or checked, so
    /// the next request asks the upstream again instead of chasing a digest
    /// that a faulty (or lying) answer named. Verified mappings stay.
    fn forget_unverified_tag(&self, target: &Target, tag: &Tag, digest: &Digest) {
        let key: TagKey = (
            target.upstream.name.clone(),
            target.repo.clone(),
            tag.clone(),
        );
        if self
            .tags
            .get(&key)
            .is_some_and(|e| !e.verified && e.digest == *digest)
        {
            self.tags.invalidate(&key);
        }
    }

    fn mark_tag_verified(&self, target: &Target, tag: &Tag, digest: &Digest) {
        let key: TagKey = (
            target.upstream.name.clone(),
            target.repo.clone(),
            tag.clone(),
        );
        if let Some(mut entry) = self.tags.get(&key) {
            if !entry.verified && entry.digest == *digest {
                entry.verified = true;
                self.tags.insert(key, entry);
            }
        }
    }
}

fn cancelled<T>() -> Result<T, PullError> {
    Err(PullError::Internal("request work was cancelled".into()))
}
