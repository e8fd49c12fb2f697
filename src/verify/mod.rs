//! The decision point. Only this module can build a [`VerifiedManifest`], and
//! the server can only serve a manifest as a `VerifiedManifest`, so nothing
//! reaches a client without passing [`Gate::decide`].
//!
//! Today a policy either denies or explicitly allows unverified content;
//! signature verification plugs in here.

pub mod attest;
pub mod check;
pub mod evidence;
pub mod legacy;
pub mod sigstore;
pub mod x509;

use std::fmt;
use std::sync::Arc;

use std::time::SystemTime;

use crate::config::UpstreamName;
use crate::oci::{ManifestContent, RepositoryName};
use crate::policy::{AttestationRequirement, Mode, PolicySet, Require, Rule};
use crate::trust::TrustSnapshot;
use evidence::Evidence;
use sigstore::Failure;

/// Why a manifest was denied; the stable, machine-readable reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Unsigned,
    UntrustedSigner,
    InvalidSignature,
    IdentityMismatch,
    CertificateExpired,
    TlogInvalid,
    AttestationMissing,
    AttestationInvalid,
    PredicateFailed,
    TrustUnavailable,
    ManifestInvalid,
    LimitExceeded,
    NoPolicy,
    ExceptionExpired,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unsigned => "unsigned",
            Reason::UntrustedSigner => "untrusted_signer",
            Reason::InvalidSignature => "invalid_signature",
            Reason::IdentityMismatch => "identity_mismatch",
            Reason::CertificateExpired => "certificate_expired",
            Reason::TlogInvalid => "tlog_invalid",
            Reason::AttestationMissing => "attestation_missing",
            Reason::AttestationInvalid => "attestation_invalid",
            Reason::PredicateFailed => "predicate_failed",
            Reason::TrustUnavailable => "trust_unavailable",
            Reason::ManifestInvalid => "manifest_invalid",
            Reason::LimitExceeded => "limit_exceeded",
            Reason::NoPolicy => "no_policy",
            Reason::ExceptionExpired => "exception_expired",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal, with the policy that refused (if one matched).
#[derive(Debug, Clone)]
pub struct Denial {
    pub reason: Reason,
    pub policy: Option<Arc<str>>,
    pub message: String,
    pub findings: Vec<Finding>,
    pub attestations: Vec<AttestationFinding>,
}

/// A manifest that may be served: its exact verified bytes and the policy
/// that allowed it. Constructed only in this module.
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    content: Arc<ManifestContent>,
    policy: Arc<str>,
    /// Set when an audit-mode policy let through what enforce would deny.
    audit_denial: Option<Reason>,
    findings: Vec<Finding>,
    attestations: Vec<AttestationFinding>,
    /// The exception that let a denied manifest through, with the reason
    /// it would otherwise have been denied.
    exception: Option<(Arc<str>, Reason, SystemTime)>,
}

impl VerifiedManifest {
    /// The exception used, and the denial it overrode.
    pub fn exception(&self) -> Option<(&str, Reason)> {
        self.exception.as_ref().map(|(n, r, _)| (n.as_ref(), *r))
    }

    /// When the exception this verdict rests on expires.
    pub fn exception_expires(&self) -> Option<SystemTime> {
        self.exception.as_ref().map(|(_, _, t)| *t)
    }

    pub fn content(&self) -> &ManifestContent {
        &self.content
    }

    pub fn policy(&self) -> &str {
        &self.policy
    }

    pub fn audit_denial(&self) -> Option<Reason> {
        self.audit_denial
    }

    /// Each required authority and whether it was met.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Each required attestation and whether it was met.
    pub fn attestations(&self) -> &[AttestationFinding] {
        &self.attestations
    }
}

/// Media types of layers that hold signatures or attestations, never files.
const SIGNATURE_LAYER_TYPES: [&str; 4] = [
    "application/vnd.dev.cosign.simplesigning.v1+json",
    "application/vnd.dsse.envelope.v1+json",
    "application/vnd.in-toto+json",
    "application/vnd.dev.sigstore.bundle",
];

/// Whether a manifest is a signature or attestation artifact: an image
/// manifest whose layers are all signature media types, or an index (the
/// referrers fallback tag) whose entries are all typed artifacts, not
/// platform images. Children of such an index are judged on their own.
pub fn is_signature_artifact(manifest: &crate::oci::Manifest) -> bool {
    match &manifest.kind {
        crate::oci::ManifestKind::Image { layers, .. } => {
            !layers.is_empty()
                && layers.iter().all(|l| {
                    SIGNATURE_LAYER_TYPES
                        .iter()
                        .any(|t| l.media_type.starts_with(t))
                })
        }
        crate::oci::ManifestKind::Index { manifests } => manifests.iter().all(|m| {
            m.platform.is_none() && m.artifact_type.as_deref().is_some_and(|t| !t.is_empty())
        }),
    }
}

/// One authority's outcome for a manifest.
#[derive(Debug, Clone)]
pub struct Finding {
    pub authority: String,
    /// `Ok` when some signature satisfied the authority, else the most
    /// specific failure seen.
    pub outcome: Result<(), Failure>,
}

/// One required attestation's outcome for a manifest.
#[derive(Debug, Clone)]
pub struct AttestationFinding {
    /// The requirement's name.
    pub requirement: String,
    pub predicate_type: String,
    /// The condition's name, when the requirement has one.
    pub condition: Option<String>,
    /// The authorities whose attestation met the requirement, or the
    /// failure (`attestation_missing`, `attestation_invalid`,
    /// `predicate_failed`) with what was wrong.
    pub outcome: Result<Vec<String>, Failure>,
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    Directly,
    /// Named by an index that this policy allowed in the same repository.
    ThroughAllowedIndex,
}

impl Gate {
    pub fn new(policies: PolicySet, trust: Arc<TrustSnapshot>) -> Self {
        Gate { policies, trust }
    }

    pub fn trust_epoch(&self) -> u64 {
        self.trust.epoch
    }

    pub fn trust(&self) -> &Arc<TrustSnapshot> {
        &self.trust
    }

    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// What deciding on a manifest of `upstream/repo`, reached this way,
    /// needs discovered.
    pub fn needs(&self, upstream: &UpstreamName, repo: &RepositoryName, reached: Reached) -> Needs {
        let Some(p) = self.policies.find(upstream.as_str(), repo.as_str()) else {
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
    /// manifest of that repository references them.
    pub fn gates_blobs(&self, upstream: &UpstreamName, repo: &RepositoryName) -> bool {
        self.policies
            .find(upstream.as_str(), repo.as_str())
            .is_some_and(|p| !matches!(p.rule, Rule::AllowUnverified))
    }

    /// Signature and attestation artifacts pass through (downstream
    /// verifiers need them) wherever a policy could allow content at all.
    /// They cannot run: their layers are signatures, not filesystems.
    pub fn pass_artifact(
        &self,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        content: Arc<ManifestContent>,
        now: SystemTime,
    ) -> Result<VerifiedManifest, Denial> {
        self.precheck(upstream, repo, now)?;
        let policy = self
            .policies
            .find(upstream.as_str(), repo.as_str())
            .map_or_else(|| Arc::from("none"), |p| Arc::from(p.name.as_str()));
        Ok(VerifiedManifest {
            content,
            policy,
            audit_denial: None,
            findings: Vec::new(),
            attestations: Vec::new(),
            exception: None,
        })
    }

    /// Refuses a repository up front when no content could ever be allowed
    /// there (no policy matches, or an enforcing policy denies everything),
    /// so such requests never reach the upstream.
    pub fn precheck(
        &self,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        now: SystemTime,
    ) -> Result<(), Denial> {
        let (policy, message) = match self.policies.find(upstream.as_str(), repo.as_str()) {
            None => (None, format!("no policy matches {upstream}/{repo}")),
            Some(p) if p.rule == Rule::Deny && p.mode == Mode::Enforce => (
                Some(Arc::from(p.name.as_str())),
                format!("policy {} denies {upstream}/{repo}", p.name),
            ),
            Some(_) => return Ok(()),
        };
        // A live exception for this repository lets its content be judged.
        match self.exception(upstream, repo, None, Reason::NoPolicy, now) {
            ExceptionOutcome::Applies(_) => Ok(()),
            ExceptionOutcome::Expired(e) => Err(Denial {
                reason: Reason::ExceptionExpired,
                message: expired_message(e, Reason::NoPolicy, &message),
                policy,
                findings: Vec::new(),
                attestations: Vec::new(),
            }),
            ExceptionOutcome::None => Err(Denial {
                reason: Reason::NoPolicy,
                policy,
                message,
                findings: Vec::new(),
                attestations: Vec::new(),
            }),
        }
    }

    /// Which exception, if any, covers a denial of `digest` (or, with no
    /// digest, any content of the repository) for `reason`. Only an
    /// exception pinned to the digest admits content that is unsigned or
    /// has no policy: a repository-wide exception relaxes a failing check,
    /// it does not vouch for unknown software.
    fn exception(
        &self,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        digest: Option<&crate::oci::Digest>,
        reason: Reason,
        now: SystemTime,
    ) -> ExceptionOutcome<'_> {
        let mut expired = None;
        for e in self
            .policies
            .exceptions_for(upstream.as_str(), repo.as_str())
        {
            let covers = match (&e.digest, digest) {
                (Some(pinned), Some(d)) => pinned == d,
                (Some(_), None) => true,
                (None, _) => !matches!(reason, Reason::Unsigned | Reason::NoPolicy),
            };
            if !covers {
                continue;
            }
            if now < e.expires {
                return ExceptionOutcome::Applies(e);
            }
            expired = Some(e);
        }
        expired.map_or(ExceptionOutcome::None, ExceptionOutcome::Expired)
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
        let Some(policy) = self.policies.find(upstream.as_str(), repo.as_str()) else {
            let message = format!("no policy matches {upstream}/{repo}");
            return match self.exception(
                upstream,
                repo,
                Some(content.digest()),
                Reason::NoPolicy,
                now,
            ) {
                ExceptionOutcome::Applies(e) => Ok(VerifiedManifest {
                    content,
                    policy: Arc::from("none"),
                    audit_denial: None,
                    findings: Vec::new(),
                    attestations: Vec::new(),
                    exception: Some((Arc::from(e.name.as_str()), Reason::NoPolicy, e.expires)),
                }),
                ExceptionOutcome::Expired(e) => Err(Denial {
                    reason: Reason::ExceptionExpired,
                    policy: None,
                    message: expired_message(e, Reason::NoPolicy, &message),
                    findings: Vec::new(),
                    attestations: Vec::new(),
                }),
                ExceptionOutcome::None => Err(Denial {
                    reason: Reason::NoPolicy,
                    policy: None,
                    message,
                    findings: Vec::new(),
                    attestations: Vec::new(),
                }),
            };
        };
        let name: Arc<str> = Arc::from(policy.name.as_str());
        let mut attestations = Vec::new();
        let (failure, findings) = match &policy.rule {
            Rule::AllowUnverified => (None, Vec::new()),
            Rule::Deny => (
                Some((
                    Reason::NoPolicy,
                    format!("policy {} denies {upstream}/{repo}", policy.name),
                )),
                Vec::new(),
            ),
            Rule::Signatures {
                authorities,
                require,
                require_child_signatures,
            } => {
                if reached == Reached::ThroughAllowedIndex && !require_child_signatures {
                    (None, Vec::new())
                } else {
                    let subject = content.digest();
                    let (failure, findings) =
                        self.judge_signatures(subject, evidence, authorities, *require, now);
                    let attested = if failure.is_none() || policy.mode == Mode::Audit {
                        attestations =
                            self.judge_attestations(subject, evidence, &policy.attestations, now);
                        first_attestation_failure(&attestations)
                    } else {
                        None
                    };
                    (failure.or(attested), findings)
                }
            }
        };
        // An explicit, counted relaxation: trust that cannot be refreshed
        // does not block this policy's images.
        let relaxed = matches!(&failure, Some((Reason::TrustUnavailable, _)))
            && policy.trust_unavailable_allows;
        let mode = if relaxed { Mode::Audit } else { policy.mode };
        match (failure, mode) {
            (None, _) => Ok(VerifiedManifest {
                content,
                policy: name,
                audit_denial: None,
                findings,
                attestations,
                exception: None,
            }),
            (Some((reason, _)), Mode::Audit) => Ok(VerifiedManifest {
                content,
                policy: name,
                audit_denial: Some(reason),
                findings,
                attestations,
                exception: None,
            }),
            (Some((reason, message)), Mode::Enforce) => {
                match self.exception(upstream, repo, Some(content.digest()), reason, now) {
                    ExceptionOutcome::Applies(e) => Ok(VerifiedManifest {
                        content,
                        policy: name,
                        audit_denial: None,
                        findings,
                        attestations,
                        exception: Some((Arc::from(e.name.as_str()), reason, e.expires)),
                    }),
                    ExceptionOutcome::Expired(e) => Err(Denial {
                        reason: Reason::ExceptionExpired,
                        policy: Some(name),
                        message: expired_message(e, reason, &message),
                        findings,
                        attestations,
                    }),
                    ExceptionOutcome::None => Err(Denial {
                        reason,
                        policy: Some(name),
                        message,
                        findings,
                        attestations,
                    }),
                }
            }
        }
    }

    /// Judges each required attestation. An attestation counts for a
    /// requirement only when it verifies for one of the requirement's
    /// authorities, its signed statement is about this digest with exactly
    /// the required predicate type, it is no older than `max_age`, and the
    /// condition holds.
    fn judge_attestations(
        &self,
        subject: &crate::oci::Digest,
        evidence: &Evidence,
        requirements: &[AttestationRequirement],
        now: SystemTime,
    ) -> Vec<AttestationFinding> {
        if requirements.is_empty() {
            return Vec::new();
        }
        let claimed: Vec<Option<String>> = evidence
            .attestations
            .iter()
            .map(attest::claimed_predicate_type)
            .collect();
        // Each (authority, attestation) is verified at most once.
        let mut verified: std::collections::HashMap<
            (String, usize),
            Result<attest::VerifiedAttestation, Failure>,
        > = std::collections::HashMap::new();
        requirements
            .iter()
            .map(|req| {
                let mut met = Vec::new();
                let mut predicate_failure: Option<String> = None;
                let mut invalid: Option<Failure> = None;
                let mut unavailable: Option<Failure> = None;
                for name in &req.authorities {
                    let Some(authority) = self.trust.authority(name) else {
                        invalid = Some(Failure::new(
                            Reason::TrustUnavailable,
                            format!("authority {name} is not loaded"),
                        ));
                        continue;
                    };
                    if let Err(why) = authority.availability(now) {
                        unavailable = Some(Failure::new(Reason::TrustUnavailable, why));
                        continue;
                    }
                    for (i, att) in evidence.attestations.iter().enumerate() {
                        let outcome = verified
                            .entry((name.clone(), i))
                            .or_insert_with(|| attest::verify(authority, att, subject, now));
                        match outcome {
                            Ok(v) if v.predicate_type == req.predicate_type => {
                                match judge_statement(req, v, now) {
                                    Ok(()) => {
                                        met.push(name.clone());
                                        break;
                                    }
                                    Err(why) => predicate_failure = Some(why),
                                }
                            }
                            // A verified statement of another type never counts.
                            Ok(_) => {}
                            Err(f) => {
                                if claimed[i].as_deref() == Some(req.predicate_type.as_str()) {
                                    invalid = Some(f.clone());
                                }
                            }
                        }
                    }
                }
                let needed = req.require.needed(req.authorities.len());
                let outcome = if met.len() >= needed {
                    Ok(met)
                } else if let Some(why) = predicate_failure {
                    Err(Failure::new(Reason::PredicateFailed, why))
                } else if let Some(f) = invalid {
                    Err(Failure::new(Reason::AttestationInvalid, f.message))
                } else if let Some(f) = unavailable {
                    Err(f)
                } else {
                    Err(Failure::new(
                        Reason::AttestationMissing,
                        format!(
                            "{} of {needed} required authorities attested {}",
                            met.len(),
                            req.predicate_type
                        ),
                    ))
                };
                AttestationFinding {
                    requirement: req.name.clone(),
                    predicate_type: req.predicate_type.clone(),
                    condition: req.condition.as_ref().map(|c| c.name.clone()),
                    outcome,
                }
            })
            .collect()
    }

    /// Counts the distinct authorities some signature satisfies.
    #[allow(clippy::type_complexity)]
    fn judge_signatures(
        &self,
        subject: &crate::oci::Digest,
        evidence: &Evidence,
        authorities: &[String],
        require: Require,
        now: SystemTime,
    ) -> (Option<(Reason, String)>, Vec<Finding>) {
        if let Some(limit) = &evidence.limit_exceeded {
            return (Some((Reason::LimitExceeded, limit.clone())), Vec::new());
        }
        if evidence.signatures.is_empty() {
            return (
                Some((Reason::Unsigned, "no signatures found".into())),
                Vec::new(),
            );
        }
        let findings: Vec<Finding> = authorities
            .iter()
            .map(|name| Finding {
                authority: name.clone(),
                outcome: match self.trust.authority(name) {
                    None => Err(Failure::new(
                        Reason::TrustUnavailable,
                        format!("authority {name} is not loaded"),
                    )),
                    Some(a) => match a.availability(now) {
                        Err(why) => Err(Failure::new(Reason::TrustUnavailable, why)),
                        Ok(()) => best_outcome(
                            evidence
                                .signatures
                                .iter()
                                .map(|s| check::check(a, s, subject, now)),
                        ),
                    },
                },
            })
            .collect();
        let met = findings.iter().filter(|f| f.outcome.is_ok()).count();
        let needed = require.needed(authorities.len());
        if met >= needed {
            return (None, findings);
        }
        let worst = findings
            .iter()
            .filter_map(|f| f.outcome.as_ref().err())
            .max_by_key(|f| specificity(f.reason))
            .cloned()
            .unwrap_or_else(|| {
                Failure::new(
                    Reason::Unsigned,
                    "no signature from the required authorities",
                )
            });
        let message = format!(
            "{met} of {needed} required authorities verified: {}",
            worst.message
        );
        (Some((worst.reason, message)), findings)
    }
}

enum ExceptionOutcome<'a> {
    Applies(&'a crate::policy::Exception),
    Expired(&'a crate::policy::Exception),
    None,
}

fn expired_message(e: &crate::policy::Exception, reason: Reason, message: &str) -> String {
    format!(
        "exception {} (ticket {}) expired at {}; without it: {reason}: {message}",
        e.name,
        e.ticket,
        humantime::format_rfc3339_seconds(e.expires)
    )
}

/// Age and condition of a verified statement of the required type.
fn judge_statement(
    req: &AttestationRequirement,
    v: &attest::VerifiedAttestation,
    now: SystemTime,
) -> Result<(), String> {
    if let Some(max_age) = req.max_age {
        match attest::evidence_time(v, now).map_err(|why| format!("{}: {why}", req.name))? {
            None => {
                return Err(format!(
                    "{}: the attestation records no time, so its age (max_age {}) is unknown",
                    req.name,
                    humantime::format_duration(max_age)
                ));
            }
            Some(t) => {
                let age = now.duration_since(t).unwrap_or_default();
                if age > max_age {
                    return Err(format!(
                        "{}: the attestation is {} old, more than max_age {}",
                        req.name,
                        humantime::format_duration(std::time::Duration::from_secs(age.as_secs())),
                        humantime::format_duration(max_age)
                    ));
                }
            }
        }
    }
    if let Some(c) = &req.condition {
        match c.evaluate(&v.statement) {
            Ok(true) => {}
            Ok(false) => return Err(format!("{}: condition {} is false", req.name, c.name)),
            Err(e) => {
                return Err(format!(
                    "{}: condition {} could not be evaluated: {e}",
                    req.name, c.name
                ));
            }
        }
    }
    Ok(())
}

/// The first unmet requirement (in config order) as a denial reason.
fn first_attestation_failure(findings: &[AttestationFinding]) -> Option<(Reason, String)> {
    findings.iter().find_map(|f| {
        f.outcome.as_ref().err().map(|e| {
            let condition = f
                .condition
                .as_ref()
                .map(|c| format!(", condition {c}"))
                .unwrap_or_default();
            (
                e.reason,
                format!(
                    "attestation {} ({}{condition}): {}",
                    f.requirement, f.predicate_type, e.message
                ),
            )
        })
    })
}

/// `Ok` if any signature passed, else the most specific failure.
fn best_outcome(outcomes: impl Iterator<Item = Result<(), Failure>>) -> Result<(), Failure> {
    let mut best: Option<Failure> = None;
    for outcome in outcomes {
        match outcome {
            Ok(()) => return Ok(()),
            Err(f) => {
                if best
                    .as_ref()
                    .is_none_or(|b| specificity(f.reason) > specificity(b.reason))
                {
                    best = Some(f);
                }
            }
        }
    }
    Err(best.unwrap_or_else(|| Failure::new(Reason::Unsigned, "no signatures")))
}

/// When several signatures fail, the denial names the failure that says the
/// most: a trusted signer with a problem beats a signer that is not trusted.
fn specificity(reason: Reason) -> u8 {
    match reason {
        Reason::Unsigned => 0,
        Reason::UntrustedSigner => 1,
        Reason::InvalidSignature => 2,
        Reason::IdentityMismatch => 3,
        Reason::TlogInvalid => 4,
        Reason::CertificateExpired => 5,
        Reason::TrustUnavailable => 6,
        _ => 7,
    }
}

#[cfg(test)]
mod tests;
