//! What the gate says: a [`VerifiedManifest`] that may be served, or a
//! [`Denial`] with its stable [`Reason`], each with the outcome for every
//! required authority ([`Finding`]) and attestation
//! ([`AttestationFinding`]). Verdicts are built only through the named
//! constructors here; those of [`VerifiedManifest`] are `verify`'s alone.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use super::sigstore::Failure;
use crate::oci::{Digest, ManifestContent};
use crate::policy::Exception;

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
    /// The client's identity is scoped (`[[client]]`) to other repositories.
    NotAuthorized,
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
            Reason::NotAuthorized => "not_authorized",
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
    pub digest: Option<Digest>,
    pub message: String,
    pub findings: Vec<Finding>,
    pub attestations: Vec<AttestationFinding>,
}

impl Denial {
    /// A denial for `reason`, by no policy, about no digest yet, with no
    /// findings.
    pub fn new(reason: Reason, message: impl Into<String>) -> Denial {
        Denial {
            reason,
            policy: None,
            digest: None,
            message: message.into(),
            findings: Vec::new(),
            attestations: Vec::new(),
        }
    }

    /// The same denial, made by `policy`.
    pub fn by_policy(self, policy: Option<Arc<str>>) -> Denial {
        Denial { policy, ..self }
    }

    /// The same denial, about the manifest `digest`.
    pub fn of(self, digest: Digest) -> Denial {
        Denial {
            digest: Some(digest),
            ..self
        }
    }

    /// The same denial, with what was found about the manifest's evidence.
    pub(super) fn with(self, found: Findings) -> Denial {
        Denial {
            findings: found.authorities,
            attestations: found.attestations,
            ..self
        }
    }

    /// This denial, when the exception that would have lifted it has
    /// expired.
    pub(super) fn exception_expired(self, e: &Exception) -> Denial {
        let message = format!(
            "exception {} (ticket {}) expired at {}; without it: {}: {}",
            e.name,
            e.ticket,
            humantime::format_rfc3339_seconds(e.expires),
            self.reason,
            self.message
        );
        Denial {
            reason: Reason::ExceptionExpired,
            message,
            ..self
        }
    }
}

/// A manifest that may be served: its exact verified bytes and the policy
/// that allowed it. Constructed only inside `verify`, by the constructors
/// below.
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
    /// `content`, allowed by `policy` with these findings.
    pub(super) fn allow(
        content: Arc<ManifestContent>,
        policy: Arc<str>,
        found: Findings,
    ) -> VerifiedManifest {
        VerifiedManifest {
            content,
            policy,
            audit_denial: None,
            findings: found.authorities,
            attestations: found.attestations,
            exception: None,
        }
    }

    /// `content`, let through by `policy` although enforce would deny it
    /// for `reason` (`message` says why).
    pub(super) fn audited(
        content: Arc<ManifestContent>,
        policy: Arc<str>,
        found: Findings,
        reason: Reason,
        message: String,
    ) -> VerifiedManifest {
        VerifiedManifest {
            audit_denial: Some((reason, message)),
            ..VerifiedManifest::allow(content, policy, found)
        }
    }

    /// `content`, let through under `policy` (`"none"` when none matched)
    /// by exception `e` despite `denied`.
    pub(super) fn excepted(
        content: Arc<ManifestContent>,
        policy: Arc<str>,
        denied: Denial,
        e: &Exception,
    ) -> VerifiedManifest {
        let exception = Some((Arc::from(e.name.as_str()), denied.reason, e.expires));
        let found = Findings {
            authorities: denied.findings,
            attestations: denied.attestations,
        };
        VerifiedManifest {
            exception,
            ..VerifiedManifest::allow(content, policy, found)
        }
    }

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

/// What was found about a manifest's evidence, for its verdict.
#[derive(Debug, Clone, Default)]
pub(super) struct Findings {
    pub authorities: Vec<Finding>,
    pub attestations: Vec<AttestationFinding>,
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
