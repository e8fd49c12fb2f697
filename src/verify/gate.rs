//! The [`Gate`]: the configured policies and a trust snapshot, applied to
//! each manifest. Every verdict is a named constructor of
//! [`super::verdict`], and every denial that an exception could lift goes
//! through [`Gate::resolve_exception`].

use std::sync::Arc;
use std::time::SystemTime;

use super::artifact::ArtifactProof;
use super::evidence::Evidence;
use super::judge::{self, Failed, Judgement};
use super::verdict::{Denial, Findings, Reason, VerifiedManifest};
use crate::oci::{Digest, ManifestContent, RepositoryName, UpstreamName};
use crate::policy::{Exception, Mode, Policy, PolicySet, Rule};
use crate::trust::TrustSnapshot;

/// What deciding on a manifest needs discovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    pub signatures: bool,
    pub attestations: bool,
}

/// Applies the configured policies to manifests.
pub struct Gate {
    policies: PolicySet,
    trust: Arc<TrustSnapshot>,
}

/// What the gate is told about how a manifest was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reached {
    Directly,
    /// Named by an index that this policy allowed in the same repository.
    ThroughAllowedIndex,
}

/// Where a manifest was found.
#[derive(Clone, Copy)]
struct Place<'a> {
    upstream: &'a UpstreamName,
    repo: &'a RepositoryName,
}

impl Gate {
    pub fn new(policies: PolicySet, trust: Arc<TrustSnapshot>) -> Self {
        Gate { policies, trust }
    }

    pub fn trust(&self) -> &Arc<TrustSnapshot> {
        &self.trust
    }

    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    fn policy(&self, upstream: &UpstreamName, repo: &RepositoryName) -> Option<&Policy> {
        self.policies.find(upstream.as_str(), repo.as_str())
    }

    /// What deciding on a manifest of `upstream/repo`, reached this way,
    /// needs discovered.
    pub fn needs(&self, upstream: &UpstreamName, repo: &RepositoryName, reached: Reached) -> Needs {
        let Some(p) = self.policy(upstream, repo) else {
            return Needs::default();
        };
        let judged = match p.rule {
            Rule::Signatures {
                require_child_signatures,
                ..
            } => reached == Reached::Directly || require_child_signatures,
            _ => false,
        };
        Needs {
            signatures: judged,
            attestations: judged && !p.attestations.is_empty(),
        }
    }

    /// Whether blobs of `upstream/repo` are served only when an allowed
    /// manifest of that repository names them: always, unless the policy
    /// admits unverified content. A repository no policy matches is gated
    /// too (an exception there admits the blobs of the manifest it pins).
    pub fn gates_blobs(&self, upstream: &UpstreamName, repo: &RepositoryName) -> bool {
        !self
            .policy(upstream, repo)
            .is_some_and(|p| matches!(p.rule, Rule::AllowUnverified))
    }

    /// Signature and attestation artifacts pass through (downstream
    /// verifiers need them) wherever a policy could allow content at all,
    /// once [`super::artifact::prove`] has shown that they are what they
    /// claim: their layers are signature documents, not filesystems.
    pub fn pass_artifact(
        &self,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        content: Arc<ManifestContent>,
        _proof: ArtifactProof,
        now: SystemTime,
    ) -> Result<VerifiedManifest, Denial> {
        self.precheck(upstream, repo, now)?;
        let policy = self
            .policy(upstream, repo)
            .map_or_else(|| Arc::from("none"), |p| Arc::from(p.name.as_str()));
        Ok(VerifiedManifest::allow(
            content,
            policy,
            Findings::default(),
        ))
    }

    /// Refuses a repository up front when no content could ever be allowed
    /// there (no policy matches, or an enforcing policy denies everything),
    /// so such requests never reach the upstream. A live exception for the
    /// repository lets its content be judged.
    pub fn precheck(
        &self,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        now: SystemTime,
    ) -> Result<(), Denial> {
        let denial = match self.policy(upstream, repo) {
            None => Denial::new(
                Reason::NoPolicy,
                format!("no policy matches {upstream}/{repo}"),
            ),
            Some(p) if p.rule == Rule::Deny && p.mode == Mode::Enforce => Denial::new(
                Reason::NoPolicy,
                format!("policy {} denies {upstream}/{repo}", p.name),
            )
            .by_policy(Some(Arc::from(p.name.as_str()))),
            Some(_) => return Ok(()),
        };
        let place = Place { upstream, repo };
        self.resolve_exception(place, None, denial, now).map(|_| ())
    }

    /// Lifts `denial` of `digest` (or, with no digest, of any content of
    /// the repository) when a live exception covers it: `Ok` with the
    /// exception and the denial it overrides. Else the denial, or an
    /// `exception_expired` one when only expired exceptions cover it.
    ///
    /// Only an exception pinned to the digest admits content that is
    /// unsigned or has no policy: a repository-wide exception relaxes a
    /// failing check, it does not vouch for unknown software.
    fn resolve_exception(
        &self,
        place: Place<'_>,
        digest: Option<&Digest>,
        denial: Denial,
        now: SystemTime,
    ) -> Result<(&Exception, Denial), Denial> {
        let mut expired = None;
        for e in self
            .policies
            .exceptions_for(place.upstream.as_str(), place.repo.as_str())
        {
            let covers = match (&e.digest, digest) {
                (Some(pinned), Some(d)) => pinned == d,
                (Some(_), None) => true,
                (None, _) => !matches!(denial.reason, Reason::Unsigned | Reason::NoPolicy),
            };
            if !covers {
                continue;
            }
            if now < e.expires {
                return Ok((e, denial));
            }
            expired = Some(e);
        }
        Err(match expired {
            Some(e) => denial.exception_expired(e),
            None => denial,
        })
    }

    /// Decides whether `content`, found at `upstream/repo`, may be served,
    /// given the signature `evidence` found for it.
    pub fn decide(
        &self,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        content: Arc<ManifestContent>,
        evidence: &Evidence,
        reached: Reached,
        now: SystemTime,
    ) -> Result<VerifiedManifest, Denial> {
        let place = Place { upstream, repo };
        let Some(policy) = self.policy(upstream, repo) else {
            let denial = Denial::new(
                Reason::NoPolicy,
                format!("no policy matches {upstream}/{repo}"),
            );
            return self
                .resolve_exception(place, Some(content.digest()), denial, now)
                .map(|(e, denied)| VerifiedManifest::excepted(content, "none".into(), denied, e));
        };
        let judged = self.judge(policy, place, content.digest(), evidence, reached, now);
        self.verdict(policy, place, content, judged, now)
    }

    /// Applies `policy`'s rule to the evidence for `subject`.
    fn judge(
        &self,
        policy: &Policy,
        place: Place<'_>,
        subject: &Digest,
        evidence: &Evidence,
        reached: Reached,
        now: SystemTime,
    ) -> Judgement {
        let (authorities, require) = match &policy.rule {
            Rule::AllowUnverified => return Judgement::default(),
            Rule::Deny => {
                let Place { upstream, repo } = place;
                return Judgement::failed(Failed::new(
                    Reason::NoPolicy,
                    format!("policy {} denies {upstream}/{repo}", policy.name),
                ));
            }
            Rule::Signatures {
                require_child_signatures: false,
                ..
            } if reached == Reached::ThroughAllowedIndex => return Judgement::default(),
            Rule::Signatures {
                authorities,
                require,
                ..
            } => (authorities, *require),
        };
        let mut judged =
            judge::signatures::judge(&self.trust, subject, evidence, authorities, require, now);
        // Attestations are judged when the signatures pass, and when their
        // failure is let through anyway (audit mode, relaxed stale trust),
        // so what is served records them.
        let attestations_count = judged.failure.as_ref().is_none_or(|f| {
            policy.mode == Mode::Audit || (f.stale_only && policy.trust_unavailable_allows)
        });
        if attestations_count {
            judged.found.attestations = judge::attestations::judge(
                &self.trust,
                subject,
                evidence,
                &policy.attestations,
                now,
            );
            let attested = judge::attestations::first_failure(&judged.found.attestations);
            judged.failure = match (judged.failure, attested) {
                (Some(mut f), Some(a)) => {
                    f.stale_only &= a.stale_only;
                    Some(f)
                }
                (f, a) => f.or(a),
            };
        }
        judged
    }

    /// The verdict on judged `content` under `policy`.
    fn verdict(
        &self,
        policy: &Policy,
        place: Place<'_>,
        content: Arc<ManifestContent>,
        judged: Judgement,
        now: SystemTime,
    ) -> Result<VerifiedManifest, Denial> {
        let name: Arc<str> = Arc::from(policy.name.as_str());
        let Some(failed) = judged.failure else {
            return Ok(VerifiedManifest::allow(content, name, judged.found));
        };
        // An explicit, counted relaxation: trust that cannot be refreshed
        // does not block this policy's images, when the signatures and
        // attestations found verify against the last good material. It
        // never admits what that material refutes, or what is not there.
        if failed.stale_only && policy.trust_unavailable_allows {
            let message = format!(
                "allowed on stale trust (on_trust_unavailable = \"allow\"): {}",
                failed.message
            );
            return Ok(VerifiedManifest::audited(
                content,
                name,
                judged.found,
                failed.reason,
                message,
            ));
        }
        match policy.mode {
            Mode::Audit => Ok(VerifiedManifest::audited(
                content,
                name,
                judged.found,
                failed.reason,
                failed.message,
            )),
            Mode::Enforce => {
                let denial = Denial::new(failed.reason, failed.message)
                    .by_policy(Some(name.clone()))
                    .with(judged.found);
                self.resolve_exception(place, Some(content.digest()), denial, now)
                    .map(|(e, denied)| VerifiedManifest::excepted(content, name, denied, e))
            }
        }
    }
}
