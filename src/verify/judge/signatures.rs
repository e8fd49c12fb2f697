//! Which required authorities signed a manifest. A threshold counts
//! distinct authorities, each credited with a signature of its own: one
//! signature never counts for two authorities (two authorities sharing a
//! key are one signer).

use std::time::SystemTime;

use super::super::check;
use super::super::evidence::{Evidence, Signature};
use super::super::sigstore::Failure;
use super::super::verdict::{Finding, Findings};
use super::{Failed, Judgement, Reason, TrustState, distinct, specificity, trust_state};
use crate::oci::Digest;
use crate::policy::Require;
use crate::trust::{Authority, TrustSnapshot};

/// Counts the distinct authorities satisfied, each by a signature of its
/// own, and says what falls short.
pub(in crate::verify) fn judge(
    trust: &TrustSnapshot,
    subject: &Digest,
    evidence: &Evidence,
    authorities: &[String],
    require: Require,
    now: SystemTime,
) -> Judgement {
    if let Some(limit) = &evidence.limit_exceeded {
        return Judgement::failed(Failed::new(Reason::LimitExceeded, limit.clone()));
    }
    if evidence.signatures.is_empty() {
        return Judgement::failed(Failed::new(Reason::Unsigned, "no signatures found"));
    }
    let authorities = distinct(authorities);
    // An empty list never means "none needed".
    let needed = require.needed(authorities.len()).max(1);
    // The same signature found twice (two layers, two referrers) is one.
    let signatures = distinct_signatures(&evidence.signatures);
    // Crediting each of several authorities with a signature of its own
    // needs every signature that satisfies each.
    let wanted = if needed > 1 {
        Wanted::Every
    } else {
        Wanted::First
    };
    let judged: Vec<Judged> = authorities
        .into_iter()
        .map(|name| judge_authority(trust, name, &signatures, subject, wanted, now))
        .collect();
    let fresh: Vec<Vec<usize>> = judged
        .iter()
        .map(|j| {
            if j.stale {
                Vec::new()
            } else {
                j.satisfied.clone()
            }
        })
        .collect();
    let any: Vec<Vec<usize>> = judged.iter().map(|j| j.satisfied.clone()).collect();
    let findings: Vec<Finding> = judged.into_iter().map(|j| j.finding).collect();
    let met = distinct_signers(&fresh);
    let failure = (met < needed).then(|| shortfall(&findings, met, needed, distinct_signers(&any)));
    Judgement {
        failure,
        found: Findings {
            authorities: findings,
            attestations: Vec::new(),
        },
    }
}

/// One authority's finding, the signatures that satisfy it, and whether
/// they were checked only against stale material.
struct Judged {
    finding: Finding,
    satisfied: Vec<usize>,
    stale: bool,
}

fn judge_authority(
    trust: &TrustSnapshot,
    name: &String,
    signatures: &[&Signature],
    subject: &Digest,
    wanted: Wanted,
    now: SystemTime,
) -> Judged {
    let judged = |outcome, satisfied, stale| Judged {
        finding: Finding {
            authority: name.clone(),
            outcome,
        },
        satisfied,
        stale,
    };
    let unavailable = |why| Err(Failure::new(Reason::TrustUnavailable, why));
    let Some(authority) = trust.authority(name) else {
        return judged(
            unavailable(format!("authority {name} is not loaded")),
            Vec::new(),
            false,
        );
    };
    let stale = match trust_state(authority, now) {
        TrustState::Unavailable(why) => return judged(unavailable(why), Vec::new(), false),
        TrustState::Fresh => None,
        TrustState::Stale(why) => Some(why),
    };
    let (outcome, satisfied) = satisfying(authority, signatures, subject, wanted, now);
    match stale {
        None => judged(outcome, satisfied, false),
        Some(why) => {
            let detail = match &outcome {
                Ok(()) => "a signature verifies against its last good material".to_string(),
                Err(f) => format!(
                    "and its last good material refutes the signatures: {}",
                    f.message
                ),
            };
            judged(unavailable(format!("{why}; {detail}")), satisfied, true)
        }
    }
}

/// Why `met` of `needed` authorities fall short: the most specific
/// failure, or trust unavailable when the authorities met counting those
/// met only with their last good material (`met_with_stale`) would do.
fn shortfall(findings: &[Finding], met: usize, needed: usize, met_with_stale: usize) -> Failed {
    let stale_only = met_with_stale >= needed;
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
    let reason = if stale_only {
        Reason::TrustUnavailable
    } else {
        worst.reason
    };
    Failed {
        reason,
        message,
        stale_only,
    }
}

/// Which of the signatures satisfying an authority to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    First,
    Every,
}

/// The signatures that satisfy `authority` (as many as `wanted`), and
/// `Ok` if any did, else the most specific failure.
fn satisfying(
    authority: &Authority,
    signatures: &[&Signature],
    subject: &Digest,
    wanted: Wanted,
    now: SystemTime,
) -> (Result<(), Failure>, Vec<usize>) {
    let mut satisfied = Vec::new();
    let mut best: Option<Failure> = None;
    for (i, s) in signatures.iter().enumerate() {
        match check::check(authority, s, subject, now) {
            Ok(()) => {
                satisfied.push(i);
                if wanted == Wanted::First {
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

/// The most authorities that can each be credited with a signature of its
/// own. `satisfied[a]` lists the signatures that satisfy authority `a`.
pub(in crate::verify) fn distinct_signers(satisfied: &[Vec<usize>]) -> usize {
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
