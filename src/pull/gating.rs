//! Which blobs and child manifests a decision lets through: what an
//! allowed manifest references is granted for its repository while its
//! verdict lives, and a grant whose grantor's verdict expired is re-derived
//! under the gate in force.

use super::*;

/// How many times a blob is decided again when a reload lands while it is
/// being decided (each decision under the gate it started with).
const RELOAD_RETRIES: usize = 2;

impl Puller {
    /// Records what an allowed manifest (`grantor`, decided under
    /// `generation`) references: an image's blobs, and an index's children,
    /// are granted for this repository while its verdict lives. A signature
    /// artifact index grants no children: they are judged on their own.
    /// Only a manifest the gate vouches for (a grantor) marks what it names
    /// as held by the repository; elsewhere the upstream is asked.
    pub(super) fn remember_references(
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
    pub(super) fn granted(
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
    pub(super) fn live(
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
    pub(super) fn rederived<'a>(
        self: &'a Arc<Self>,
        target: &'a Target,
        kind: Grant,
        subject: &'a RepoDigest,
        generation: u64,
        depth: usize,
        shared: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, PullError>> + Send + 'a>>
    {
        Box::pin(async move {
            let grants = match kind {
                Grant::Blob => &self.blob_grants,
                Grant::Child => &self.child_grants,
            };
            if self.granted(grants, subject, generation, 0) {
                return Ok(true);
            }
            if depth >= MAX_GRANT_DEPTH {
                return Ok(false);
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
            // Then what other replicas found naming it: each is decided
            // here, and grants only if its own bytes name the subject.
            let known: Vec<Digest> = grants
                .grantors(subject, generation)
                .into_iter()
                .map(|(m, _)| m)
                .collect();
            let shared = match shared {
                true => self.shared_grantors(kind, subject, &known).await,
                false => Vec::new(),
            };
            let mut failed = None;
            for m in expired.into_iter().chain(shared.into_iter().take(REDECIDE)) {
                let decided = self
                    .verdict(target, &Reference::Digest(m.clone()), m, depth + 1)
                    .await;
                match decided {
                    Ok(_) if self.granted(grants, subject, generation, 0) => return Ok(true),
                    Ok(_) | Err(PullError::Denied(_)) => {}
                    // Not a denial (overload, an upstream fault): said as
                    // such if nothing else grants, rather than as a 403.
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            failed.map_or(Ok(false), Err)
        })
    }

    /// Blobs flow only for manifests that passed: unless the policy admits
    /// unverified content, a blob must be named by a manifest of this
    /// repository that is allowed under the gate in force.
    pub(super) async fn check_blob_allowed(
        self: &Arc<Self>,
        target: &Target,
        digest: &Digest,
    ) -> Result<(), PullError> {
        let subject = target.key(digest);
        for _ in 0..RELOAD_RETRIES {
            let (gate, generation) = self.gate();
            if !gate.gates_blobs(&target.upstream.name, &target.repo) {
                return Ok(());
            }
            let granted = self
                .rederived(target, Grant::Blob, &subject, generation, 0, true)
                .await?;
            // A grant derived while a reload happened belongs to the gate
            // it retired: it does not count; the blob is decided again
            // under the gate now in force.
            if self.gate().1 != generation {
                continue;
            }
            if granted {
                return Ok(());
            }
            break;
        }
        let message = format!(
            "blob {digest} is not referenced by an allowed manifest of {}",
            target.repo
        );
        Err(PullError::Denied(
            Denial::new(Reason::Unsigned, message).of(digest.clone()),
        ))
    }
}
