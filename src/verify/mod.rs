//! The decision point. Only this module can build a [`VerifiedManifest`], and
//! the server can only serve a manifest as a `VerifiedManifest`, so nothing
//! reaches a client without passing [`Gate::decide`].
//!
//! Today a policy either denies or explicitly allows unverified content;
//! signature verification plugs in here.

pub mod sigstore;

use std::fmt;
use std::sync::Arc;

use crate::config::UpstreamName;
use crate::oci::{ManifestContent, RepositoryName};
use crate::policy::{Mode, PolicySet, Rule};

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
}

/// A manifest that may be served: its exact verified bytes and the policy
/// that allowed it. Constructed only in this module.
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    content: Arc<ManifestContent>,
    policy: Arc<str>,
    /// Set when an audit-mode policy let through what enforce would deny.
    audit_denial: Option<Reason>,
}

impl VerifiedManifest {
    pub fn content(&self) -> &ManifestContent {
        &self.content
    }

    pub fn policy(&self) -> &str {
        &self.policy
    }

    pub fn audit_denial(&self) -> Option<Reason> {
        self.audit_denial
    }
}

/// Applies the configured policies to manifests.
pub struct Gate {
    policies: PolicySet,
}

impl Gate {
    pub fn new(policies: PolicySet) -> Self {
        Gate { policies }
    }

    /// Refuses a repository up front when no content could ever be allowed
    /// there (no policy matches, or an enforcing policy denies everything),
    /// so such requests never reach the upstream.
    pub fn precheck(&self, upstream: &UpstreamName, repo: &RepositoryName) -> Result<(), Denial> {
        match self.policies.find(upstream.as_str(), repo.as_str()) {
            None => Err(Denial {
                reason: Reason::NoPolicy,
                policy: None,
                message: format!("no policy matches {upstream}/{repo}"),
            }),
            Some(p) if p.rule == Rule::Deny && p.mode == Mode::Enforce => Err(Denial {
                reason: Reason::NoPolicy,
                policy: Some(Arc::from(p.name.as_str())),
                message: format!("policy {} denies {upstream}/{repo}", p.name),
            }),
            Some(_) => Ok(()),
        }
    }

    /// Decides whether `content`, found at `upstream/repo`, may be served.
    pub fn decide(
        &self,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        content: Arc<ManifestContent>,
    ) -> Result<VerifiedManifest, Denial> {
        let Some(policy) = self.policies.find(upstream.as_str(), repo.as_str()) else {
            return Err(Denial {
                reason: Reason::NoPolicy,
                policy: None,
                message: format!("no policy matches {upstream}/{repo}"),
            });
        };
        let name: Arc<str> = Arc::from(policy.name.as_str());
        let failure = match policy.rule {
            Rule::AllowUnverified => None,
            Rule::Deny => Some((
                Reason::NoPolicy,
                format!("policy {} denies {upstream}/{repo}", policy.name),
            )),
        };
        match (failure, policy.mode) {
            (None, _) => Ok(VerifiedManifest {
                content,
                policy: name,
                audit_denial: None,
            }),
            (Some((reason, _)), Mode::Audit) => Ok(VerifiedManifest {
                content,
                policy: name,
                audit_denial: Some(reason),
            }),
            (Some((reason, message)), Mode::Enforce) => Err(Denial {
                reason,
                policy: Some(name),
                message,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{Digest, MediaType};
    use crate::policy::{Glob, Policy};

    fn content() -> Arc<ManifestContent> {
        let bytes = bytes::Bytes::from_static(b"{}");
        let media = MediaType::parse(crate::oci::media::OCI_MANIFEST).unwrap();
        Arc::new(ManifestContent::new(Digest::sha256_of(&bytes), media, bytes).unwrap())
    }

    fn policy(name: &str, pattern: &str, mode: Mode, rule: Rule) -> Policy {
        Policy {
            name: name.into(),
            patterns: vec![pattern.parse::<Glob>().unwrap()],
            mode,
            rule,
        }
    }

    #[test]
    fn first_matching_policy_decides_and_no_match_is_no_policy() {
        let gate = Gate::new(PolicySet::new(vec![
            policy(
                "open",
                "hub/library/**",
                Mode::Enforce,
                Rule::AllowUnverified,
            ),
            policy("closed", "hub/**", Mode::Enforce, Rule::Deny),
        ]));
        let hub: UpstreamName = "hub".parse().unwrap();
        let ok = gate
            .decide(&hub, &"library/nginx".parse().unwrap(), content())
            .unwrap();
        assert_eq!(ok.policy(), "open");
        let denied = gate
            .decide(&hub, &"acme/app".parse().unwrap(), content())
            .unwrap_err();
        assert_eq!(denied.policy.as_deref(), Some("closed"));
        let other: UpstreamName = "other".parse().unwrap();
        let none = gate
            .decide(&other, &"x".parse().unwrap(), content())
            .unwrap_err();
        assert_eq!(none.reason, Reason::NoPolicy);
        assert!(none.policy.is_none());
    }

    #[test]
    fn audit_mode_allows_and_records_what_enforce_would_deny() {
        let gate = Gate::new(PolicySet::new(vec![policy(
            "watch",
            "**",
            Mode::Audit,
            Rule::Deny,
        )]));
        let v = gate
            .decide(&"hub".parse().unwrap(), &"a".parse().unwrap(), content())
            .unwrap();
        assert_eq!(v.audit_denial(), Some(Reason::NoPolicy));
    }
}
