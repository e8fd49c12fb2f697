//! The decision point. Only this module can build a [`VerifiedManifest`], and
//! the server can only serve a manifest as a `VerifiedManifest`, so nothing
//! reaches a client without passing [`Gate::decide`].
//!
//! Today a policy either denies or explicitly allows unverified content;
//! signature verification plugs in here.

pub mod artifact;
pub mod attest;
pub mod check;
pub mod evidence;
pub mod legacy;
mod signer;
pub mod sigstore;
pub mod x509;

use std::fmt;
use std::sync::Arc;

use std::time::SystemTime;

use crate::oci::UpstreamName;
use crate::oci::{ManifestContent, RepositoryName};
use crate::policy::{AttestationRequirement, Mode, PolicySet, Require, Rule};
use crate::trust::TrustSnapshot;
use evidence::{Evidence, Signature};
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
    MediaTypeMismatch,
    ManifestUnsupported,
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
            Reason::MediaTypeMismatch => "media_type_mismatch",
            Reason::ManifestUnsupported => "manifest_unsupported",
            Reason::LimitExceeded => "limit_exceeded",
            Reason::NoPolicy => "no_policy",
            Reason::ExceptionExpired => "exception_expired",
        }
    }
}

impl Reason {
    /// Why content an upstream sent as a manifest was refused.
    pub fn for_manifest(e: &crate::oci::media::ManifestError) -> Reason {
        use crate::oci::media::ManifestError as E;
        match e {
            E::MediaTypeMismatch { .. } => Reason::MediaTypeMismatch,
            E::SchemaVersion(_) | E::Unsupported(_) => Reason::ManifestUnsupported,
            E::Json(_) | E::NoMediaType | E::Ambiguous | E::Missing(_) => Reason::ManifestInvalid,
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
    /// The manifest decided, once known (a denial before tag resolution has none).
    pub digest: Option<crate::oci::Digest>,
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
    /// Set when an audit-mode policy (or a relaxation of stale trust) let
    /// through what enforce would deny, with why it would have been denied.
    audit_denial: Option<(Reason, String)>,
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
        self.audit_denial.as_ref().map(|(r, _)| *r)
    }

    /// What enforce mode would have said, when this was let through anyway.
    pub fn audit_message(&self) -> Option<&str> {
        self.audit_denial.as_ref().map(|(_, m)| m.as_str())
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
    /// The requirement failed only because trust is stale: it is met by
    /// attestations that verify against the authorities' last good material.
    pub stale_only: bool,
}

/// Why a manifest failed its checks, and whether the only obstacle was
/// trust past `max_stale` (what `on_trust_unavailable = "allow"` relaxes).
#[derive(Debug, Clone)]
struct Failed {
    reason: Reason,
    message: String,
    stale_only: bool,
}

impl Failed {
    fn new(reason: Reason, message: impl Into<String>) -> Failed {
        Failed {
            reason,
            message: message.into(),
            stale_only: false,
        }
    }
}

/// How far an authority's material can be relied on now.
enum TrustState {
    Fresh,
    /// Loaded, but past `max_stale`: signatures are still checked against
    /// it, so a relaxation never admits what that material refutes.
    Stale(String),
    /// Nothing to check against (never fetched, or not usable).
    Unavailable(String),
}

fn trust_state(authority: &crate::trust::Authority, now: SystemTime) -> TrustState {
    match authority.availability(now) {
        Ok(()) => TrustState::Fresh,
        Err(why) if authority.unavailable.is_none() => TrustState::Stale(why),
        Err(why) => TrustState::Unavailable(why),
    }
}

/// Each signature once, however often it was found.
fn distinct_signatures(signatures: &[Signature]) -> Vec<&Signature> {
    let mut seen = std::collections::HashSet::new();
    signatures
        .iter()
        .filter(|s| {
            seen.insert(match s {
                Signature::Legacy(l) => (
                    l.payload.clone(),
                    l.signature.split_whitespace().collect::<String>(),
                ),
                Signature::Bundle(b) => (b.clone(), String::new()),
            })
        })
        .collect()
}

/// Each name once, in order: a threshold counts distinct authorities.
fn distinct(names: &[String]) -> Vec<&String> {
    let mut seen = std::collections::HashSet::new();
    names.iter().filter(|n| seen.insert(n.as_str())).collect()
}

/// The most authorities that can each be credited with a signature of its
/// own: one signature never counts for two authorities (two authorities
/// sharing a key are one signer). `satisfied[a]` lists the signatures that
/// satisfy authority `a`.
fn distinct_signers(satisfied: &[Vec<usize>]) -> usize {
    fn augment(
        a: usize,
        satisfied: &[Vec<usize>],
        owner: &mut Vec<Option<usize>>,
        seen: &mut Vec<bool>,
    ) -> bool {
        for &s in &satisfied[a] {
            if seen[s] {
                continue;
            }
            seen[s] = true;
            if owner[s].is_none_or(|other| augment(other, satisfied, owner, seen)) {
                owner[s] = Some(a);
                return true;
            }
        }
        false
    }
    let signatures = satisfied.iter().flatten().map(|s| s + 1).max().unwrap_or(0);
    let mut owner = vec![None; signatures];
    (0..satisfied.len())
        .filter(|&a| augment(a, satisfied, &mut owner, &mut vec![false; signatures]))
        .count()
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// manifest of that repository names them: always, unless the policy
    /// admits unverified content. A repository no policy matches is gated
    /// too (an exception there admits the blobs of the manifest it pins).
    pub fn gates_blobs(&self, upstream: &UpstreamName, repo: &RepositoryName) -> bool {
        !self
            .policies
            .find(upstream.as_str(), repo.as_str())
            .is_some_and(|p| matches!(p.rule, Rule::AllowUnverified))
    }

    /// Signature and attestation artifacts pass through (downstream
    /// verifiers need them) wherever a policy could allow content at all,
    /// once [`artifact::prove`] has shown that they are what they claim:
    /// their layers are signature documents, not filesystems.
    pub fn pass_artifact(
        &self,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        content: Arc<ManifestContent>,
        _proof: artifact::ArtifactProof,
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
                digest: None,
                reason: Reason::ExceptionExpired,
                message: expired_message(e, Reason::NoPolicy, &message),
                policy,
                findings: Vec::new(),
                attestations: Vec::new(),
            }),
            ExceptionOutcome::None => Err(Denial {
                digest: None,
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
                    digest: None,
                    reason: Reason::ExceptionExpired,
                    policy: None,
                    message: expired_message(e, Reason::NoPolicy, &message),
                    findings: Vec::new(),
                    attestations: Vec::new(),
                }),
                ExceptionOutcome::None => Err(Denial {
                    digest: None,
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
                Some(Failed::new(
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
                    let needed = match &failure {
                        None => true,
                        Some(f) => {
                            policy.mode == Mode::Audit
                                || (f.stale_only && policy.trust_unavailable_allows)
                        }
                    };
                    let attested = if needed {
                        attestations =
                            self.judge_attestations(subject, evidence, &policy.attestations, now);
                        first_attestation_failure(&attestations)
                    } else {
                        None
                    };
                    let failure = match (failure, attested) {
                        (Some(mut f), Some(a)) => {
                            f.stale_only &= a.stale_only;
                            Some(f)
                        }
                        (f, a) => f.or(a),
                    };
                    (failure, findings)
                }
            }
        };
        // An explicit, counted relaxation: trust that cannot be refreshed
        // does not block this policy's images, when the signatures and
        // attestations found verify against the last good material. It
        // never admits what that material refutes, or what is not there.
        let relaxed =
            failure.as_ref().is_some_and(|f| f.stale_only) && policy.trust_unavailable_allows;
        let mode = if relaxed { Mode::Audit } else { policy.mode };
        match (failure.map(|f| (f.reason, f.message)), mode) {
            (None, _) => Ok(VerifiedManifest {
                content,
                policy: name,
                audit_denial: None,
                findings,
                attestations,
                exception: None,
            }),
            (Some((reason, message)), Mode::Audit) => Ok(VerifiedManifest {
                content,
                policy: name,
                audit_denial: Some((
                    reason,
                    if relaxed {
                        format!(
                            "allowed on stale trust (on_trust_unavailable = \"allow\"): {message}"
                        )
                    } else {
                        message
                    },
                )),
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
                        digest: None,
                        reason: Reason::ExceptionExpired,
                        policy: Some(name),
                        message: expired_message(e, reason, &message),
                        findings,
                        attestations,
                    }),
                    ExceptionOutcome::None => Err(Denial {
                        digest: None,
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
                let mut met_stale = Vec::new();
                let mut predicate_failure: Option<String> = None;
                let mut invalid: Option<Failure> = None;
                let mut unavailable: Option<Failure> = None;
                let authorities = distinct(&req.authorities);
                for name in &authorities {
                    let Some(authority) = self.trust.authority(name) else {
                        invalid = Some(Failure::new(
                            Reason::TrustUnavailable,
                            format!("authority {name} is not loaded"),
                        ));
                        continue;
                    };
                    let stale = match trust_state(authority, now) {
                        TrustState::Fresh => false,
                        TrustState::Stale(why) => {
                            unavailable = Some(Failure::new(Reason::TrustUnavailable, why));
                            true
                        }
                        TrustState::Unavailable(why) => {
                            unavailable = Some(Failure::new(Reason::TrustUnavailable, why));
                            continue;
                        }
                    };
                    for (i, att) in evidence.attestations.iter().enumerate() {
                        let outcome = verified
                            .entry(((*name).clone(), i))
                            .or_insert_with(|| attest::verify(authority, att, subject, now));
                        match outcome {
                            Ok(v) if v.predicate_type == req.predicate_type => {
                                match judge_statement(req, v, now) {
                                    Ok(()) => {
                                        if stale {
                                            met_stale.push((*name).clone());
                                        } else {
                                            met.push((*name).clone());
                                        }
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
                // An empty list never means "none needed".
                let needed = req.require.needed(authorities.len()).max(1);
                let stale_only = met.len() < needed && met.len() + met_stale.len() >= needed;
                let outcome = if met.len() >= needed {
                    Ok(met)
                } else if stale_only {
                    Err(Failure::new(
                        Reason::TrustUnavailable,
                        format!(
                            "{} of {needed} required authorities attested {} with fresh trust; {} only with their last good material: {}",
                            met.len(),
                            req.predicate_type,
                            met_stale.len(),
                            unavailable.map(|f| f.message).unwrap_or_default()
                        ),
                    ))
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
                    stale_only,
                }
            })
            .collect()
    }

    /// Counts the distinct authorities satisfied, each by a signature of
    /// its own. An authority whose trust is stale is still checked against
    /// its last good material: that can make the failure "stale only"
    /// (relaxable), never a pass.
    fn judge_signatures(
        &self,
        subject: &crate::oci::Digest,
        evidence: &Evidence,
        authorities: &[String],
        require: Require,
        now: SystemTime,
    ) -> (Option<Failed>, Vec<Finding>) {
        if let Some(limit) = &evidence.limit_exceeded {
            return (
                Some(Failed::new(Reason::LimitExceeded, limit.clone())),
                Vec::new(),
            );
        }
        if evidence.signatures.is_empty() {
            return (
                Some(Failed::new(Reason::Unsigned, "no signatures found")),
                Vec::new(),
            );
        }
        let authorities = distinct(authorities);
        // An empty list never means "none needed".
        let needed = require.needed(authorities.len()).max(1);
        // The same signature found twice (two layers, two referrers) is one.
        let signatures = distinct_signatures(&evidence.signatures);
        let mut findings = Vec::new();
        let mut fresh: Vec<Vec<usize>> = Vec::new();
        let mut any: Vec<Vec<usize>> = Vec::new();
        for name in authorities {
            let (outcome, satisfied, stale) = match self.trust.authority(name) {
                None => (
                    Err(Failure::new(
                        Reason::TrustUnavailable,
                        format!("authority {name} is not loaded"),
                    )),
                    Vec::new(),
                    false,
                ),
                Some(a) => match trust_state(a, now) {
                    TrustState::Unavailable(why) => (
                        Err(Failure::new(Reason::TrustUnavailable, why)),
                        Vec::new(),
                        false,
                    ),
                    state => {
                        let (outcome, satisfied) =
                            satisfying(a, &signatures, subject, needed > 1, now);
                        match state {
                            TrustState::Stale(why) => {
                                let detail = match &outcome {
                                    Ok(()) => "a signature verifies against its last good material"
                                        .to_string(),
                                    Err(f) => format!(
                                        "and its last good material refutes the signatures: {}",
                                        f.message
                                    ),
                                };
                                (
                                    Err(Failure::new(
                                        Reason::TrustUnavailable,
                                        format!("{why}; {detail}"),
                                    )),
                                    satisfied,
                                    true,
                                )
                            }
                            _ => (outcome, satisfied, false),
                        }
                    }
                },
            };
            fresh.push(if stale { Vec::new() } else { satisfied.clone() });
            any.push(satisfied);
            findings.push(Finding {
                authority: name.clone(),
                outcome,
            });
        }
        let met = distinct_signers(&fresh);
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
        let stale_only = distinct_signers(&any) >= needed;
        let reason = if stale_only {
            Reason::TrustUnavailable
        } else {
            worst.reason
        };
        (
            Some(Failed {
                reason,
                message,
                stale_only,
            }),
            findings,
        )
    }
}

/// The signatures that satisfy `authority` (all of them when `all`, else
/// the first), and `Ok` if any did, else the most specific failure.
fn satisfying(
    authority: &crate::trust::Authority,
    signatures: &[&Signature],
    subject: &crate::oci::Digest,
    all: bool,
    now: SystemTime,
) -> (Result<(), Failure>, Vec<usize>) {
    let mut satisfied = Vec::new();
    let mut best: Option<Failure> = None;
    for (i, s) in signatures.iter().enumerate() {
        match check::check(authority, s, subject, now) {
            Ok(()) => {
                satisfied.push(i);
                if !all {
                    break;
                }
            }
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
    let outcome = if satisfied.is_empty() {
        Err(best.unwrap_or_else(|| Failure::new(Reason::Unsigned, "no signatures")))
    } else {
        Ok(())
    };
    (outcome, satisfied)
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

/// The first unmet requirement (in config order) as a denial reason;
/// stale only when every unmet requirement is.
fn first_attestation_failure(findings: &[AttestationFinding]) -> Option<Failed> {
    let stale_only = findings.iter().all(|f| f.outcome.is_ok() || f.stale_only);
    findings.iter().find_map(|f| {
        f.outcome.as_ref().err().map(|e| {
            let condition = f
                .condition
                .as_ref()
                .map(|c| format!(", condition {c}"))
                .unwrap_or_default();
            Failed {
                reason: e.reason,
                message: format!(
                    "attestation {} ({}{condition}): {}",
                    f.requirement, f.predicate_type, e.message
                ),
                stale_only,
            }
        })
    })
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
