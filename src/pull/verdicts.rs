//! Cached verdicts and when they end.
//!
//! An allow verdict lives `verdict_ttl`, or until the exception it rests on
//! expires if that is sooner; a denial lives `deny_ttl`. Both ends are read
//! from the injected [`Clock`] when the verdict is looked up, so a test can
//! move time instead of sleeping. The cache's own expiry, counted on the
//! monotonic clock from the insert, is kept as well: memory is reclaimed, and
//! a wall clock set back cannot make a verdict outlive its TTL.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Verdict, VerdictKey};
use crate::clock::Clock;

#[derive(Clone)]
struct Held {
    verdict: Verdict,
    /// When the verdict ends, by the clock.
    until: SystemTime,
}

pub(super) struct Verdicts {
    cache: moka::sync::Cache<VerdictKey, Held>,
    allow: Duration,
    deny: Duration,
    clock: Arc<dyn Clock>,
}

/// The cache's backstop: a verdict is dropped when its time, as it stood at
/// the insert, has passed on the monotonic clock.
struct UntilInsertTime(Arc<dyn Clock>);

impl moka::Expiry<VerdictKey, Held> for UntilInsertTime {
    fn expire_after_create(
        &self,
        _: &VerdictKey,
        held: &Held,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(held.until.duration_since(self.0.now()).unwrap_or_default())
    }

    /// A verdict stored again (the old one had ended by the clock) gets
    /// its own time, not what was left of the old one's.
    fn expire_after_update(
        &self,
        key: &VerdictKey,
        held: &Held,
        at: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, held, at)
    }
}

impl Verdicts {
    /// At most `capacity` verdicts; allows live `allow`, denials `deny`.
    pub(super) fn new(
        capacity: u64,
        allow: Duration,
        deny: Duration,
        clock: Arc<dyn Clock>,
    ) -> Verdicts {
        Verdicts {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilInsertTime(Arc::clone(&clock)))
                .build(),
            allow,
            deny,
            clock,
        }
    }

    /// The verdict cached under `key`, unless it has ended.
    pub(super) fn get(&self, key: &VerdictKey) -> Option<Verdict> {
        let held = self.cache.get(key)?;
        (self.clock.now() < held.until).then_some(held.verdict)
    }

    pub(super) fn insert(&self, key: VerdictKey, verdict: Verdict) {
        let now = self.clock.now();
        let until = match &verdict {
            // A verdict resting on an exception ends when the exception does.
            Ok(m) => {
                let ttl = now + self.allow;
                m.exception_expires().map_or(ttl, |t| t.min(ttl))
            }
            Err(_) => now + self.deny,
        };
        self.cache.insert(key, Held { verdict, until });
    }

    /// Forgets every verdict (a new gate is in force).
    pub(super) fn clear(&self) {
        self.cache.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::oci::{Digest, RepositoryName, UpstreamName};
    use crate::verify::{Denial, Reached, Reason};

    fn key() -> VerdictKey {
        let digest = Digest::sha256_of(b"m");
        (
            (
                "local".parse::<UpstreamName>().unwrap(),
                "a/b".parse::<RepositoryName>().unwrap(),
                digest,
            ),
            1,
            Reached::Directly,
        )
    }

    #[test]
    fn a_denial_ends_deny_ttl_after_it_was_cached_by_the_clock() {
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let verdicts = Verdicts::new(
            10,
            Duration::from_secs(600),
            Duration::from_secs(30),
            clock.clone(),
        );
        verdicts.insert(key(), denial());
        clock.advance(Duration::from_secs(29));
        assert!(verdicts.get(&key()).is_some_and(|v| v.is_err()));
        clock.advance(Duration::from_secs(1));
        assert!(verdicts.get(&key()).is_none(), "deny_ttl has passed");
    }

    fn denial() -> Verdict {
        Err(Denial::new(Reason::Unsigned, "no signature"))
    }

    #[test]
    fn a_verdict_stored_again_gets_its_own_time_and_the_monotonic_clock_still_ends_it() {
        // The injected clock stands still (as a wall clock set back would):
        // the monotonic expiry ends the verdict anyway.
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let ttl = Duration::from_millis(300);
        for stored in 1..=2 {
            let verdicts = Verdicts::new(10, ttl, ttl, clock.clone());
            for _ in 0..stored {
                verdicts.insert(key(), denial());
            }
            assert!(verdicts.get(&key()).is_some(), "stored {stored} times");
            std::thread::sleep(ttl + Duration::from_millis(100));
            assert!(verdicts.get(&key()).is_none(), "stored {stored} times");
        }
    }
}
