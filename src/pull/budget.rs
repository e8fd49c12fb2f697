//! The process-wide bounds on decisions: how many run at once, and how many
//! bytes they hold (manifests read, signatures, attestations and artifact
//! documents kept until judged). A decision that cannot get its share in
//! time fails 503 with `Retry-After` (not cached): a flood of cold decisions
//! slows decisions down instead of growing memory without end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::PullError;
use crate::metrics::Metrics;

/// Held by every decision for the manifests it reads whole (the manifest
/// itself, signature and attestation tag manifests, referrers pages; each
/// at most 4 MiB, most far smaller). A decision takes its shares one by
/// one; one that cannot get the next in time gives all back (503), so
/// decisions waiting on each other cannot wedge the budget.
pub const DECISION_BASE_BYTES: u64 = 4 << 20;

/// How long a decision waits for its share before failing 503.
const WAIT: Duration = Duration::from_secs(10);

pub(super) struct Budget {
    decisions: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

/// A share of the budget, given back when dropped.
pub(super) struct Held {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
    amount: i64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.sub(self.amount);
    }
}

impl Budget {
    pub(super) fn new(decisions: usize, bytes: u64, metrics: Arc<Metrics>) -> Budget {
        Budget {
            decisions: Arc::new(Semaphore::new(decisions)),
            bytes: Arc::new(Semaphore::new(
                usize::try_from(bytes).unwrap_or(Semaphore::MAX_PERMITS),
            )),
            metrics,
        }
    }

    /// A place for one more decision, with its base bytes.
    pub(super) async fn decision(&self) -> Result<(Held, Held), PullError> {
        let slot = self.take(&self.decisions, 1, "decisions").await?;
        let base = self.bytes(DECISION_BASE_BYTES).await?;
        Ok((slot, base))
    }

    /// `n` more bytes for the decision that holds the result.
    pub(super) async fn bytes(&self, n: u64) -> Result<Held, PullError> {
        self.take(&self.bytes, n, "bytes").await
    }

    async fn take(&self, from: &Arc<Semaphore>, n: u64, bound: &str) -> Result<Held, PullError> {
        let want = u32::try_from(n).unwrap_or(u32::MAX);
        let wait = Arc::clone(from).acquire_many_owned(want);
        let Ok(Ok(permit)) = tokio::time::timeout(WAIT, wait).await else {
            self.metrics
                .decisions_refused
                .with_label_values(&[bound])
                .inc();
            return Err(PullError::Busy(format!(
                "the proxy is deciding as much as it may at once ({bound}); retry shortly"
            )));
        };
        let gauge = match bound {
            "decisions" => self.metrics.decisions_in_flight.clone(),
            _ => self.metrics.decision_bytes_held.clone(),
        };
        let amount = i64::from(want);
        gauge.add(amount);
        Ok(Held {
            _permit: permit,
            gauge,
            amount,
        })
    }
}
