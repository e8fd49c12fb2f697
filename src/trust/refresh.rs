//! The refresh schedule of trust that comes from elsewhere: each URL
//! source and TUF repository is refreshed on its interval (less up to 10%
//! jitter, so replicas do not refresh in step), retried sooner after a
//! failure, and every outcome is counted; a refused document is audited.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Sources;
use super::source::Refresh;
use crate::audit::{Audit, DocumentRefused, Event};
use crate::config::{self, AuthorityConfig};
use crate::metrics::Metrics;

/// Trust refreshed on a schedule: an authority's URL source, or a TUF
/// repository (one refresh however many authorities use it).
pub enum Refreshable {
    Source {
        authority: String,
        config: config::SourceConfig,
    },
    Tuf(config::TufSource),
}

impl Refreshable {
    /// The name its material and metrics are kept under.
    pub fn key(&self) -> String {
        match self {
            Refreshable::Source { authority, .. } => authority.clone(),
            Refreshable::Tuf(t) => t.key(),
        }
    }

    pub fn interval(&self) -> Duration {
        match self {
            Refreshable::Source { config, .. } => config.refresh,
            Refreshable::Tuf(t) => t.refresh,
        }
    }

    pub fn max_stale(&self) -> Duration {
        match self {
            Refreshable::Source { config, .. } => config.max_stale,
            Refreshable::Tuf(t) => t.max_stale,
        }
    }
}

/// Everything these authorities refresh on a schedule.
pub fn refreshables(authorities: &[AuthorityConfig]) -> Vec<Refreshable> {
    let mut out: Vec<Refreshable> = Vec::new();
    for a in authorities {
        if let config::AuthorityKind::Source(src) = &a.kind {
            out.push(Refreshable::Source {
                authority: a.name.clone(),
                config: src.clone(),
            });
        }
        if let Some(config::TrustedRootSource::Tuf(t)) = &a.trusted_root {
            if !out.iter().any(|r| r.key() == t.key()) {
                out.push(Refreshable::Tuf(t.clone()));
            }
        }
    }
    out
}

/// Refreshes `what` once: counts the outcome, remembers a new error, and
/// audits a refused document when the refusal starts or changes.
pub async fn refresh(
    sources: &Sources,
    metrics: &Metrics,
    audit: &Audit,
    what: &Refreshable,
    now: SystemTime,
) -> Refresh {
    let key = what.key();
    let authority = key.as_str();
    let outcome = match what {
        Refreshable::Source { authority, config } => sources.refresh(authority, config, now).await,
        Refreshable::Tuf(t) => sources.refresh_tuf(t, now).await,
    };
    let new_error = sources.note(authority, &outcome, now);
    match &outcome {
        Refresh::Failed(e) => {
            tracing::warn!(authority, error = %e, "trust source refresh failed; the last good material stays");
        }
        Refresh::Refused(r) => {
            tracing::error!(authority, error = %r, "trust document refused; the last good material stays");
            // Audited when the refusal starts (or changes), not at every retry.
            if new_error {
                let url = match what {
                    Refreshable::Source { config, .. } => config.url.as_str(),
                    Refreshable::Tuf(t) => t.url.as_str(),
                };
                audit.record(&Event::TrustDocumentRefused(DocumentRefused {
                    authority,
                    url,
                    reason: r.kind(),
                    error: r.to_string(),
                }));
            }
        }
        _ => {}
    }
    let succeeded_at = match &outcome {
        Refresh::Failed(_) | Refresh::Refused(_) => None,
        _ => Some(
            now.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        ),
    };
    metrics.trust_refreshed(authority, outcome.label(), succeeded_at);
    outcome
}

/// When each refreshable is next due, and which are being refreshed now.
/// Refreshes run as their own tasks, so a slow source (up to its timeouts)
/// delays neither the others nor reloads; each reports back when it ends.
#[derive(Default)]
pub struct Schedule {
    due: HashMap<String, Instant>,
    running: HashSet<String>,
}

impl Schedule {
    /// Those of `all` due at `now`, marked running. One added by a reload,
    /// or never fetched (`held` is false for it), is due at once; others
    /// first come due one (jittered) interval after they are first seen.
    pub fn take_due(
        &mut self,
        all: Vec<Refreshable>,
        held: impl Fn(&str) -> bool,
        now: Instant,
    ) -> Vec<Refreshable> {
        let mut ready = Vec::new();
        for r in all {
            let key = r.key();
            if self.running.contains(&key) {
                continue;
            }
            let next = *self.due.entry(key.clone()).or_insert_with(|| {
                if held(&key) {
                    now + jittered(r.interval())
                } else {
                    now
                }
            });
            if now >= next {
                self.running.insert(key);
                ready.push(r);
            }
        }
        ready
    }

    /// `key` is due at once (unless it is running; then its next run,
    /// which follows the change, is the one that counts).
    pub fn due_now(&mut self, key: &str, now: Instant) {
        if !self.running.contains(key) {
            self.due.insert(key.to_string(), now);
        }
    }

    /// `key`'s refresh ended at `now`; it is due again after `wait` (jittered).
    pub fn finished(&mut self, key: String, wait: Duration, now: Instant) {
        self.running.remove(&key);
        self.due.insert(key, now + jittered(wait));
    }
}

/// How soon a failed trust refresh is tried again (or its interval, if shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// How long after a refresh that ended with `outcome` `what` is due again:
/// a failed refresh is retried soon, not a whole interval later.
pub fn next_wait(what: &Refreshable, outcome: &Refresh) -> Duration {
    match outcome {
        Refresh::Failed(_) | Refresh::Refused(_) => what.interval().min(RETRY_AFTER_FAILURE),
        _ => what.interval(),
    }
}

/// `d` less up to 10%, so replicas do not refresh in step.
fn jittered(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    d.mul_f64(1.0 - f64::from(nanos % 1000) / 10_000.0)
}
