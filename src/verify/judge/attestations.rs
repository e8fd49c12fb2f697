//! Which required attestations a manifest meets. An attestation counts for
//! a requirement only when it verifies for one of the requirement's
//! authorities, its signed statement is about this digest with exactly the
//! required predicate type, it is no older than `max_age`, and the
//! condition holds.

use std::collections::HashMap;
use std::time::SystemTime;

use super::super::attest::{self, VerifiedAttestation};
use super::super::evidence::Evidence;
use super::super::sigstore::Failure;
use super::super::verdict::AttestationFinding;
use super::{Failed, Reason, TrustState, distinct, trust_state};
use crate::oci::Digest;
use crate::policy::AttestationRequirement;
use crate::trust::TrustSnapshot;

/// Judges each of `requirements` against the attestations in `evidence`.
pub(in crate::verify) fn judge(
    trust: &TrustSnapshot,
    subject: &Digest,
    evidence: &Evidence,
    requirements: &[AttestationRequirement],
    now: SystemTime,
) -> Vec<AttestationFinding> {
    if requirements.is_empty() {
        return Vec::new();
    }
    let mut judge = Judge {
        trust,
        subject,
        evidence,
        now,
        claimed: evidence
            .attestations
            .iter()
            .map(attest::claimed_predicate_type)
            .collect(),
        verified: HashMap::new(),
    };
    requirements
        .iter()
        .map(|req| judge.requirement(req))
        .collect()
}

/// Each attestation verified for an authority, by (authority, index).
type Verified = HashMap<(String, usize), Result<VerifiedAttestation, Failure>>;

struct Judge<'a> {
    trust: &'a TrustSnapshot,
    subject: &'a Digest,
    evidence: &'a Evidence,
    now: SystemTime,
    /// The predicate type each attestation claims (unverified: it only
    /// chooses the reason for a denial).
    claimed: Vec<Option<String>>,
    /// Each (authority, attestation) is verified at most once.
    verified: Verified,
}

/// What one requirement's authorities showed.
#[derive(Default)]
struct Tally {
    /// Authorities whose attestation met the requirement, with fresh trust.
    met: Vec<String>,
    /// ... and with only their last good material.
    met_stale: Vec<String>,
    predicate_failure: Option<String>,
    invalid: Option<Failure>,
    unavailable: Option<Failure>,
}

impl Judge<'_> {
    fn requirement(&mut self, req: &AttestationRequirement) -> AttestationFinding {
        let mut tally = Tally::default();
        let authorities = distinct(&req.authorities);
        for name in &authorities {
            self.authority(req, name, &mut tally);
        }
        // An empty list never means "none needed".
        let needed = req.require.needed(authorities.len()).max(1);
        let met = tally.met.len();
        let stale_only = met < needed && met + tally.met_stale.len() >= needed;
        AttestationFinding {
            requirement: req.name.clone(),
            predicate_type: req.predicate_type.clone(),
            condition: req.condition.as_ref().map(|c| c.name.clone()),
            outcome: tally.outcome(req, needed, stale_only),
            stale_only,
        }
    }

    /// Adds what authority `name`'s attestations show for `req`.
    fn authority(&mut self, req: &AttestationRequirement, name: &str, tally: &mut Tally) {
        let Some(authority) = self.trust.authority(name) else {
            tally.invalid = Some(Failure::new(
                Reason::TrustUnavailable,
                format!("authority {name} is not loaded"),
            ));
            return;
        };
        let stale = match trust_state(authority, self.now) {
            TrustState::Fresh => false,
            TrustState::Stale(why) => {
                tally.unavailable = Some(Failure::new(Reason::TrustUnavailable, why));
                true
            }
            TrustState::Unavailable(why) => {
                tally.unavailable = Some(Failure::new(Reason::TrustUnavailable, why));
                return;
            }
        };
        let (subject, now) = (self.subject, self.now);
        for (i, att) in self.evidence.attestations.iter().enumerate() {
            let outcome = self
                .verified
                .entry((name.to_string(), i))
                .or_insert_with(|| attest::verify(authority, att, subject, now));
            match outcome {
                Ok(v) if v.predicate_type == req.predicate_type => {
                    match judge_statement(req, v, now) {
                        Ok(()) if stale => {
                            tally.met_stale.push(name.to_string());
                            break;
                        }
                        Ok(()) => {
                            tally.met.push(name.to_string());
                            break;
                        }
                        Err(why) => tally.predicate_failure = Some(why),
                    }
                }
                // A verified statement of another type never counts.
                Ok(_) => {}
                Err(f) => {
                    if self.claimed[i].as_deref() == Some(req.predicate_type.as_str()) {
                        tally.invalid = Some(f.clone());
                    }
                }
            }
        }
    }
}

impl Tally {
    /// The requirement's outcome: the authorities that met it, or the most
    /// telling failure.
    fn outcome(
        self,
        req: &AttestationRequirement,
        needed: usize,
        stale_only: bool,
    ) -> Result<Vec<String>, Failure> {
        if self.met.len() >= needed {
            return Ok(self.met);
        }
        Err(if stale_only {
            Failure::new(
                Reason::TrustUnavailable,
                format!(
                    "{} of {needed} required authorities attested {} with fresh trust; {} only with their last good material: {}",
                    self.met.len(),
                    req.predicate_type,
                    self.met_stale.len(),
                    self.unavailable.map(|f| f.message).unwrap_or_default()
                ),
            )
        } else if let Some(why) = self.predicate_failure {
            Failure::new(Reason::PredicateFailed, why)
        } else if let Some(f) = self.invalid {
            Failure::new(Reason::AttestationInvalid, f.message)
        } else if let Some(f) = self.unavailable {
            f
        } else {
            Failure::new(
                Reason::AttestationMissing,
                format!(
                    "{} of {needed} required authorities attested {}",
                    self.met.len(),
                    req.predicate_type
                ),
            )
        })
    }
}

/// Age and condition of a verified statement of the required type.
fn judge_statement(
    req: &AttestationRequirement,
    v: &VerifiedAttestation,
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
pub(in crate::verify) fn first_failure(findings: &[AttestationFinding]) -> Option<Failed> {
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
