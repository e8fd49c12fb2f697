//! `portcullis verify IMAGE`: decide on one image exactly as the proxy
//! would, and explain why.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use super::{Exit, Failure, Report, StartError, reason_code, with_runtime};
use crate::app::{App, BuildError};
use crate::config::Config;
use crate::oci::Digest;
use crate::oci::name::{ReferenceError, split_image};
use crate::pull::PullError;
use crate::upstream::RoutingError;
use crate::verify::{self, Denial, Reason, VerifiedManifest};

/// Loads the config at `path` and decides on `image`
/// (`registry/repository[:tag|@digest]`, the registry an upstream name).
pub fn verify_image(image: &str, path: &Path) -> Result<VerifyReport, VerifyError> {
    with_runtime(path, |config| async move { decide(image, &config).await })
}

async fn decide(image: &str, config: &Config) -> Result<VerifyReport, VerifyError> {
    let (name, reference) = split_image(image).map_err(|source| VerifyError::Image {
        image: image.to_string(),
        source,
    })?;
    let (app, _scratch) = App::build_diagnostic(config).await?;
    let target = app.target_for(name).map_err(|source| VerifyError::Route {
        name: name.to_string(),
        source,
    })?;
    let image = image_name(&target.upstream.name, &target.repo, &reference);
    Ok(match app.puller.manifest(&target, &reference).await {
        Ok(v) => VerifyReport::allowed(image, &v),
        Err(PullError::Denied(d)) => VerifyReport::denied(image, &d),
        Err(e) => VerifyReport::undecided(image, e.to_string()),
    })
}

/// `upstream/repo:tag`, or `upstream/repo@digest`, as references are written.
fn image_name(
    upstream: &impl fmt::Display,
    repo: &impl fmt::Display,
    reference: &crate::oci::Reference,
) -> String {
    match reference {
        crate::oci::Reference::Digest(d) => format!("{upstream}/{repo}@{d}"),
        crate::oci::Reference::Tag(t) => format!("{upstream}/{repo}:{}", t.as_str()),
    }
}

/// Why no image could even be looked at.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{image}: {source}")]
    Image {
        image: String,
        source: ReferenceError,
    },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("{name}: {source}")]
    Route { name: String, source: RoutingError },
}

impl Failure for VerifyError {
    fn exit(&self) -> Exit {
        Exit::NoDecision
    }
}

/// The decision on one image, with each authority's and each required
/// attestation's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// `upstream/repository:reference`.
    pub image: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub authorities: Vec<AuthorityFinding>,
    pub attestations: Vec<AttestationFinding>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Allow {
        digest: Digest,
        policy: String,
    },
    /// An audit-mode policy let through what enforce would deny, for `reason`.
    AuditAllow {
        digest: Digest,
        policy: String,
        #[serde(serialize_with = "reason_code")]
        reason: Reason,
        message: String,
    },
    Deny {
        /// `None` when no policy matched.
        policy: Option<String>,
        /// `None` when the denial came before the tag was resolved.
        digest: Option<Digest>,
        #[serde(serialize_with = "reason_code")]
        reason: Reason,
        message: String,
    },
    /// The upstream or the proxy failed before a decision (`error` says how).
    NoDecision {
        error: String,
    },
}

/// One authority a policy names, and whether some signature met it.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorityFinding {
    pub authority: String,
    #[serde(flatten)]
    pub outcome: AuthorityOutcome,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AuthorityOutcome {
    Met,
    NotMet(NotMet),
}

/// One attestation a policy requires, and whether it was met.
#[derive(Debug, Clone, Serialize)]
pub struct AttestationFinding {
    pub requirement: String,
    pub predicate_type: String,
    /// The condition's name, when the requirement has one.
    pub condition: Option<String>,
    #[serde(flatten)]
    pub outcome: AttestationOutcome,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AttestationOutcome {
    /// Met by attestations from these authorities.
    Met {
        by: Vec<String>,
    },
    NotMet(NotMet),
}

/// The most specific failure seen.
#[derive(Debug, Clone, Serialize)]
pub struct NotMet {
    #[serde(serialize_with = "reason_code")]
    pub reason: Reason,
    pub message: String,
}

impl VerifyReport {
    pub fn allowed(image: String, v: &VerifiedManifest) -> VerifyReport {
        let (digest, policy) = (v.content().digest().clone(), v.policy().to_string());
        let verdict = match v.audit_denial() {
            Some(reason) => Verdict::AuditAllow {
                digest,
                policy,
                reason,
                message: v.audit_message().unwrap_or_default().to_string(),
            },
            None => Verdict::Allow { digest, policy },
        };
        VerifyReport::with_findings(image, verdict, v.findings(), v.attestations())
    }

    pub fn denied(image: String, d: &Denial) -> VerifyReport {
        let verdict = Verdict::Deny {
            policy: d.policy.as_deref().map(str::to_string),
            digest: d.digest.clone(),
            reason: d.reason,
            message: d.message.clone(),
        };
        VerifyReport::with_findings(image, verdict, &d.findings, &d.attestations)
    }

    pub fn undecided(image: String, error: String) -> VerifyReport {
        VerifyReport::with_findings(image, Verdict::NoDecision { error }, &[], &[])
    }

    fn with_findings(
        image: String,
        verdict: Verdict,
        authorities: &[verify::Finding],
        attestations: &[verify::AttestationFinding],
    ) -> VerifyReport {
        VerifyReport {
            image,
            verdict,
            authorities: authorities.iter().map(AuthorityFinding::from).collect(),
            attestations: attestations.iter().map(AttestationFinding::from).collect(),
        }
    }
}

impl From<&verify::Finding> for AuthorityFinding {
    fn from(f: &verify::Finding) -> AuthorityFinding {
        AuthorityFinding {
            authority: f.authority.clone(),
            outcome: match &f.outcome {
                Ok(()) => AuthorityOutcome::Met,
                Err(e) => AuthorityOutcome::NotMet(NotMet::from(e)),
            },
        }
    }
}

impl From<&verify::AttestationFinding> for AttestationFinding {
    fn from(f: &verify::AttestationFinding) -> AttestationFinding {
        AttestationFinding {
            requirement: f.requirement.clone(),
            predicate_type: f.predicate_type.clone(),
            condition: f.condition.clone(),
            outcome: match &f.outcome {
                Ok(by) => AttestationOutcome::Met { by: by.clone() },
                Err(e) => AttestationOutcome::NotMet(NotMet::from(e)),
            },
        }
    }
}

impl From<&verify::sigstore::Failure> for NotMet {
    fn from(e: &verify::sigstore::Failure) -> NotMet {
        NotMet {
            reason: e.reason,
            message: e.message.clone(),
        }
    }
}

impl Report for VerifyReport {
    fn exit(&self) -> Exit {
        match self.verdict {
            Verdict::Allow { .. } | Verdict::AuditAllow { .. } => Exit::Success,
            Verdict::Deny { .. } => Exit::Failure,
            Verdict::NoDecision { .. } => Exit::NoDecision,
        }
    }

    fn diagnostic(&self) -> Option<String> {
        match &self.verdict {
            Verdict::NoDecision { error } => Some(format!("no decision: {error}")),
            _ => None,
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "image: {}", self.image)?;
        write!(f, "{}", self.verdict)?;
        for a in &self.authorities {
            writeln!(f, "{a}")?;
        }
        for a in &self.attestations {
            writeln!(f, "{a}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Allow { digest, policy } => {
                writeln!(f, "digest: {digest}\npolicy: {policy}\nverdict: allow")
            }
            Verdict::AuditAllow {
                digest,
                policy,
                reason,
                ..
            } => writeln!(
                f,
                "digest: {digest}\npolicy: {policy}\n\
                 verdict: allow (audit mode; enforce would deny: {reason})"
            ),
            Verdict::Deny {
                policy,
                digest,
                reason,
                message,
            } => {
                if let Some(digest) = digest {
                    writeln!(f, "digest: {digest}")?;
                }
                let policy = policy.as_deref().unwrap_or("(none)");
                writeln!(f, "policy: {policy}\nverdict: deny ({reason}): {message}")
            }
            Verdict::NoDecision { .. } => Ok(()),
        }
    }
}

/// One line, indented, without its newline.
impl fmt::Display for AuthorityFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            AuthorityOutcome::Met => write!(f, "  authority {}: met", self.authority),
            AuthorityOutcome::NotMet(e) => write!(
                f,
                "  authority {}: not met ({}: {})",
                self.authority, e.reason, e.message
            ),
        }
    }
}

/// One line, indented, without its newline.
impl fmt::Display for AttestationFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "  attestation {} ({}",
            self.requirement, self.predicate_type
        )?;
        if let Some(c) = &self.condition {
            write!(f, ", condition {c}")?;
        }
        match &self.outcome {
            AttestationOutcome::Met { by } => write!(f, "): met by {}", by.join(", ")),
            AttestationOutcome::NotMet(e) => {
                write!(f, "): not met ({}: {})", e.reason, e.message)
            }
        }
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
