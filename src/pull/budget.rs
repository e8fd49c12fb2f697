//! The bounds on decisions, one set per upstream (a slow or hostile
//! upstream uses up its own, never another's): how many run at once, and
//! how many bytes of documents they hold (signatures, attestations,
//! referrer and artifact documents kept until judged). A decision that
//! cannot get its share in time fails 503 with `Retry-After` (not cached):
//! a flood of cold decisions slows decisions down instead of growing memory
//! without end. A share larger than the whole budget is refused at once, so
//! it never waits at the head of the queue holding up the others.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::PullError;
use crate::config::DECISION_MOST_BYTES;
use crate::metrics::Metrics;

// The least byte budget config accepts holds what one decision may hold at
// once: three document sets (legacy signatures, Sigstore bundles, legacy
// attestations) of at most MAX_ATTESTATION_TOTAL each, and eight referrer
// manifests of at most MAX_MANIFEST_BYTES being read.
const _: () = assert!(
    DECISION_MOST_BYTES
        == 3 * crate::verify::evidence::MAX_ATTESTATION_TOTAL
            + 8 * crate::upstream::MAX_MANIFEST_BYTES as u64
);

/// How long a decision waits for its share before failing 503.
const WAIT: Duration = Duration::from_secs(10);

pub(super) struct Budget {
    decisions: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    capacity: u64,
    wait: Duration,
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
                usize::try_from(bytes)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            )),
            capacity: bytes,
            wait: WAIT,
            metrics,
        }
    }

    /// A place for one more decision.
    pub(super) async fn decision(&self) -> Result<Held, PullError> {
        self.take(&self.decisions, 1, "decisions").await
    }

    /// `n` more bytes for the decision that holds the result.
    pub(super) async fn bytes(&self, n: u64) -> Result<Held, PullError> {
        if n > self.capacity.min(u64::from(u32::MAX)) {
            self.metrics.decision_refused("bytes");
            return Err(PullError::Busy(format!(
                "a decision needs {n} bytes, more than limits.decision_bytes"
            )));
        }
        self.take(&self.bytes, n, "bytes").await
    }

    async fn take(&self, from: &Arc<Semaphore>, n: u64, bound: &str) -> Result<Held, PullError> {
        let want = u32::try_from(n).unwrap_or(u32::MAX);
        let wait = Arc::clone(from).acquire_many_owned(want);
        let Ok(Ok(permit)) = tokio::time::timeout(self.wait, wait).await else {
            self.metrics.decision_refused(bound);
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

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_WAIT: Duration = Duration::from_millis(200);

    fn budget(decisions: usize, bytes: u64) -> Arc<Budget> {
        let mut b = Budget::new(decisions, bytes, Arc::new(Metrics::new().unwrap()));
        b.wait = TEST_WAIT;
        Arc::new(b)
    }

    #[tokio::test]
    async fn places_and_bytes_are_counted_in_their_own_gauges_while_held() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let b = Budget::new(4, 100, Arc::clone(&metrics));
        let place = b.decision().await.unwrap();
        let bytes = b.bytes(30).await.unwrap();
        assert_eq!(metrics.decisions_in_flight.get(), 1);
        assert_eq!(metrics.decision_bytes_held.get(), 30);
        drop((place, bytes));
        assert_eq!(metrics.decisions_in_flight.get(), 0);
        assert_eq!(metrics.decision_bytes_held.get(), 0);
    }

    #[tokio::test]
    async fn a_share_larger_than_the_budget_is_refused_at_once_and_holds_nobody_up() {
        let b = budget(4, 100);
        let started = std::time::Instant::now();
        assert!(matches!(b.bytes(101).await, Err(PullError::Busy(_))));
        assert!(matches!(b.bytes(u64::MAX).await, Err(PullError::Busy(_))));
        assert!(started.elapsed() < TEST_WAIT, "refused without waiting");
        assert!(
            b.bytes(100).await.is_ok(),
            "the whole budget is still there"
        );
    }

    #[tokio::test]
    async fn shares_wait_for_room_then_fail_busy_and_come_back_when_dropped() {
        let b = budget(1, 100);
        let first = b.bytes(60).await.unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(b.bytes(60).await, Err(PullError::Busy(_))));
        assert!(
            started.elapsed() >= TEST_WAIT,
            "waited for room, then gave up"
        );
        drop(first);
        let _second = b.bytes(60).await.unwrap();
        let place = b.decision().await.unwrap();
        assert!(matches!(b.decision().await, Err(PullError::Busy(_))));
        drop(place);
        assert!(b.decision().await.is_ok());
    }
}
