//! Single flight: concurrent callers with the same key share one run of the
//! work. The work runs in its own task, so a caller that goes away (a client
//! that disconnects) does not cancel it for the others; when the last caller
//! has gone, the work is cancelled, so work nobody waits for cannot pile up
//! (a client that opens and resets streams leaves nothing running).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

type Flight<V> = Shared<BoxFuture<'static, V>>;

struct Running<V> {
    flight: Flight<V>,
    id: u64,
    waiters: usize,
    task: tokio::task::AbortHandle,
}

type Map<K, V> = Arc<Mutex<HashMap<K, Running<V>>>>;

pub struct Flights<K, V: Clone> {
    running: Map<K, V>,
    next_id: AtomicU64,
}

impl<K, V> Flights<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new() -> Self {
        Flights {
            running: Arc::new(Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(0),
        }
    }

    /// Runs `work` unless a run for `key` is under way, then waits for the
    /// shared result. `on_cancel` is what waiters get if the task panics.
    pub async fn run<F, Fut>(&self, key: K, work: F, on_cancel: V) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let (flight, id) = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            match running.get_mut(&key) {
                Some(r) => {
                    r.waiters += 1;
                    (r.flight.clone(), r.id)
                }
                None => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let fut = work();
                    let map = Arc::clone(&self.running);
                    let k = key.clone();
                    let task = tokio::spawn(async move {
                        let v = fut.await;
                        remove(&map, &k, id);
                        v
                    });
                    let abort = task.abort_handle();
                    let flight = async move { task.await.unwrap_or(on_cancel) }
                        .boxed()
                        .shared();
                    running.insert(
                        key.clone(),
                        Running {
                            flight: flight.clone(),
                            id,
                            waiters: 1,
                            task: abort,
                        },
                    );
                    (flight, id)
                }
            }
        };
        let _waiting = Waiting {
            map: Arc::clone(&self.running),
            key,
            id,
        };
        flight.await
    }

    /// Number of runs under way (for tests and metrics).
    pub fn len(&self) -> usize {
        self.running.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes run `id` of `key`, if it is still the one registered.
fn remove<K: Hash + Eq, V>(map: &Mutex<HashMap<K, Running<V>>>, key: &K, id: u64) {
    let mut running = map.lock().unwrap_or_else(|e| e.into_inner());
    if running.get(key).is_some_and(|r| r.id == id) {
        running.remove(key);
    }
}

/// One caller waiting on run `id` of `key`; the last to leave cancels it.
struct Waiting<K: Hash + Eq, V> {
    map: Map<K, V>,
    key: K,
    id: u64,
}

impl<K: Hash + Eq, V> Drop for Waiting<K, V> {
    fn drop(&mut self) {
        let mut running = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = running.get_mut(&self.key).filter(|r| r.id == self.id) else {
            return;
        };
        r.waiters -= 1;
        if r.waiters == 0 {
            r.task.abort();
            running.remove(&self.key);
        }
    }
}

impl<K, V> Default for Flights<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Flights::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights: Arc<Flights<u32, u32>> = Arc::new(Flights::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..50 {
            let flights = Arc::clone(&flights);
            let runs = Arc::clone(&runs);
            handles.push(tokio::spawn(async move {
                flights
                    .run(
                        7,
                        || async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            42
                        },
                        0,
                    )
                    .await
            }));
        }
        for h in handles {
            assert_eq!(h.await.unwrap(), 42);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_first_caller_does_not_cancel_the_work_for_another_waiting() {
        let flights: Arc<Flights<u32, u32>> = Arc::new(Flights::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&runs);
        let first = {
            let flights = Arc::clone(&flights);
            tokio::spawn(async move {
                flights
                    .run(
                        1,
                        || async move {
                            r.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            5
                        },
                        0,
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let r2 = Arc::clone(&runs);
        let second = {
            let flights = Arc::clone(&flights);
            tokio::spawn(async move {
                flights
                    .run(
                        1,
                        || async move {
                            r2.fetch_add(1, Ordering::SeqCst);
                            6
                        },
                        0,
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        assert_eq!(
            second.await.unwrap(),
            5,
            "the second caller joined the first run"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn work_is_cancelled_when_its_last_caller_leaves() {
        let flights: Arc<Flights<u32, u32>> = Arc::new(Flights::new());
        let finished = Arc::new(AtomicUsize::new(0));
        let f = Arc::clone(&finished);
        let caller = {
            let flights = Arc::clone(&flights);
            tokio::spawn(async move {
                flights
                    .run(
                        1,
                        || async move {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            f.fetch_add(1, Ordering::SeqCst);
                            5
                        },
                        0,
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        caller.abort();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            flights.is_empty(),
            "the run left the map with its last caller"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 0, "the work was cancelled");
        let again = flights.run(1, || async { 7 }, 0).await;
        assert_eq!(again, 7, "a new caller starts a new run");
    }
}
