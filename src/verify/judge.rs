//! Judging a manifest's evidence against what its policy requires: which
//! required authorities signed it ([`signatures`]) and which required
//! attestations hold ([`attestations`]). An authority whose trust is stale
//! is still checked against its last good material: that can make a failure
//! "stale only" (what `on_trust_unavailable = "allow"` relaxes), never a
//! pass.

pub(super) mod attestations;
pub(super) mod signatures;

use std::time::SystemTime;

use super::Reason;
use super::verdict::Findings;
use crate::trust::{Authority, Unavailable};

/// Why a manifest failed its checks, and whether the only obstacle was
/// trust past `max_stale` (what `on_trust_unavailable = "allow"` relaxes).
#[derive(Debug, Clone)]
pub(super) struct Failed {
    pub reason: Reason,
    pub message: String,
    pub stale_only: bool,
}

impl Failed {
    pub fn new(reason: Reason, message: impl Into<String>) -> Failed {
        Failed {
            reason,
            message: message.into(),
            stale_only: false,
        }
    }
}

/// What judging a manifest's evidence found: the first failure, if any,
/// and each requirement's outcome.
#[derive(Debug, Clone, Default)]
pub(super) struct Judgement {
    pub failure: Option<Failed>,
    pub found: Findings,
}

impl Judgement {
    pub fn failed(failure: Failed) -> Judgement {
        Judgement {
            failure: Some(failure),
            found: Findings::default(),
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

fn trust_state(authority: &Authority, now: SystemTime) -> TrustState {
    match authority.availability(now) {
        Ok(()) => TrustState::Fresh,
        Err(why @ Unavailable::NotLoaded { .. }) => TrustState::Unavailable(why.to_string()),
        Err(why @ (Unavailable::Stale { .. } | Unavailable::Expired { .. })) => {
            TrustState::Stale(why.to_string())
        }
    }
}

/// Each name once, in order: a threshold counts distinct authorities.
fn distinct(names: &[String]) -> Vec<&String> {
    let mut seen = std::collections::HashSet::new();
    names.iter().filter(|n| seen.insert(n.as_str())).collect()
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
mod tests {
    use super::*;

    #[test]
    fn failures_rank_from_unsigned_up_to_trust_unavailable_and_other_reasons_above() {
        let ranked = [
            Reason::Unsigned,
            Reason::UntrustedSigner,
            Reason::InvalidSignature,
            Reason::IdentityMismatch,
            Reason::TlogInvalid,
            Reason::CertificateExpired,
            Reason::TrustUnavailable,
            Reason::LimitExceeded,
        ];
        for pair in ranked.windows(2) {
            assert!(
                specificity(pair[0]) < specificity(pair[1]),
                "{:?} must say less than {:?}",
                pair[0],
                pair[1]
            );
        }
    }
}
