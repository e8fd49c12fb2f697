//! Single flight: concurrent callers with the same key share one run of the
//! work. The work runs in its own task, so a caller that goes away (a client
//! that disconnects) never cancels it for the others.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

type Flight<V> = Shared<BoxFuture<'static, V>>;

pub struct Flights<K, V: Clone> {
    running: Arc<Mutex<HashMap<K, Flight<V>>>>,
}

impl<K, V> Flights<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new() -> Self {
        Flights {
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Runs `work` unless a run for `key` is under way, then waits for the
    /// shared result. `on_cancel` is what waiters get if the task panics.
    pub async fn run<F, Fut>(&self, key: K, work: F, on_cancel: V) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let flight = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            match running.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let fut = work();
                    let map = Arc::clone(&self.running);
                    let k = key.clone();
                    let task = tokio::spawn(async move {
                        let v = fut.await;
                        map.lock().unwrap_or_else(|e| e.into_inner()).remove(&k);
                        v
                    });
                    let flight = async move { task.await.unwrap_or(on_cancel) }
                        .boxed()
                        .shared();
                    running.insert(key, flight.clone());
                    flight
                }
            }
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
    async fn a_cancelled_first_caller_does_not_cancel_the_work() {
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
        first.abort();
        let r2 = Arc::clone(&runs);
        let second = flights
            .run(
                1,
                || async move {
                    r2.fetch_add(1, Ordering::SeqCst);
                    6
                },
                0,
            )
            .await;
        assert_eq!(second, 5, "the second caller joined the first run");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
