//! What one client connection may hold, and for how long: the watchdog that
//! closes a connection which asks nothing (within `header_read_timeout`) or
//! goes idle (for `idle_timeout`), and the send timeout that drops a
//! response whose client stopped taking data (HTTP/2: the stream is reset
//! and its buffers freed, the connection's other streams go on; HTTP/1: the
//! connection is closed).
//!
//! A response body is [`Tracked`]: each frame it hands over marks its stream
//! as waiting on the client until the next frame is asked for. HTTP/2
//! streams run as their own tasks, spawned through [`StreamExecutor`], which
//! gives each its [`Progress`] (a task-local) and ends the task when the
//! stream has waited longer than the send timeout. HTTP/1 responses are
//! written by the connection task, so they mark the connection's own
//! [`Progress`], which the connection watchdog checks.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus::IntCounter;
use tokio::time::Instant;

use super::response::{Body, BoxError};

/// The per-connection bounds of one listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Metric label: `registry` or `admin`.
    pub listener: &'static str,
    /// TLS handshake, and then the first request, must each come within this.
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    pub max_connections: usize,
    pub max_streams: u32,
    pub keepalive_interval: Duration,
}

impl Limits {
    /// The admin listener's bounds: few connections, short timeouts.
    pub fn admin() -> Limits {
        Limits {
            listener: "admin",
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_streams: 16,
            keepalive_interval: Duration::from_secs(20),
        }
    }
}

/// HTTP/2 bytes queued per stream before hyper stops asking the body for
/// more (hyper's default is 400 KiB).
pub const SEND_BUFFER: usize = 64 << 10;
/// HTTP/2 receive windows, stream and connection: this proxy reads no
/// request bodies, so a client may not park more than this with us.
pub const RECEIVE_WINDOW: u32 = 65_535;
/// Streams a client may open and reset before they are accepted, and
/// streams we may reset for its protocol errors, before its connection is
/// closed (hyper's defaults are 20 and 1024).
pub const PENDING_RESETS: usize = 20;
pub const ERROR_RESETS: usize = 64;
/// After an idle connection is asked to close (HTTP/2 GOAWAY), how long it
/// may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a response is waiting for its client to take a frame, and since
/// when.
#[derive(Debug, Default)]
pub struct Progress {
    waiting_since: Mutex<Option<Instant>>,
}

impl Progress {
    fn handed(&self) {
        *lock(&self.waiting_since) = Some(Instant::now());
    }

    fn taken(&self) {
        *lock(&self.waiting_since) = None;
    }

    fn waiting_since(&self) -> Option<Instant> {
        *lock(&self.waiting_since)
    }
}

tokio::task_local! {
    /// The progress of the HTTP/2 stream whose task is running.
    static STREAM: Arc<Progress>;
}

/// The progress a response served from the current task reports to: its
/// HTTP/2 stream's, or (HTTP/1) the connection's.
pub fn current_progress(connection: &Activity) -> Arc<Progress> {
    STREAM
        .try_with(Arc::clone)
        .unwrap_or_else(|_| Arc::clone(&connection.progress))
}

/// Spawns hyper's HTTP/2 stream tasks, each ended when its response has
/// waited on the client for longer than the send timeout.
#[derive(Clone)]
pub struct StreamExecutor {
    pub send_timeout: Duration,
    pub timeouts: IntCounter,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let progress = Arc::new(Progress::default());
        let fut = STREAM.scope(Arc::clone(&progress), fut);
        tokio::spawn(until_stalled(
            fut,
            progress,
            self.send_timeout,
            self.timeouts.clone(),
        ));
    }
}

/// Runs `fut` until it ends or `progress` has waited for `timeout`; then
/// drops it (for an HTTP/2 stream: hyper resets it and h2 frees what it
/// queued).
async fn until_stalled(
    fut: impl Future<Output = ()>,
    progress: Arc<Progress>,
    timeout: Duration,
    timeouts: IntCounter,
) {
    tokio::pin!(fut);
    let mut check = Instant::now() + timeout;
    loop {
        tokio::select! {
            () = &mut fut => return,
            () = tokio::time::sleep_until(check) => {
                match progress.waiting_since() {
                    Some(since) if since.elapsed() >= timeout => {
                        timeouts.inc();
                        tracing::debug!("HTTP/2 stream reset: the client took no data for the send timeout");
                        return;
                    }
                    Some(since) => check = since + timeout,
                    // A wait that starts now is seen within a quarter of
                    // the timeout of its end.
                    None => check = Instant::now() + timeout / 4,
                }
            }
        }
    }
}

/// One connection's requests: how many are in flight, whether any was ever
/// made, and when the last one finished.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
    /// HTTP/1 responses' progress (HTTP/2 streams have their own).
    progress: Arc<Progress>,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    requests: u64,
    idle_since: Instant,
}

/// What the watchdog should do with a connection now.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Look again then.
    Wait(Instant),
    /// No request within `header_read_timeout`.
    NoRequest,
    /// Nothing in flight for `idle_timeout`.
    Idle,
    /// An HTTP/1 response waited on the client past `send_timeout`.
    Stalled,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(State {
                in_flight: 0,
                requests: 0,
                idle_since: Instant::now(),
            }),
            progress: Arc::new(Progress::default()),
        })
    }

    /// A request has begun; it is in flight until the guard (moved into its
    /// response body) is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        let mut s = lock(&self.state);
        s.in_flight += 1;
        s.requests += 1;
        InFlight(Arc::clone(self))
    }

    pub fn in_flight(&self) -> usize {
        lock(&self.state).in_flight
    }

    pub fn verdict(&self, now: Instant, limits: &Limits) -> Verdict {
        let mut next = now + limits.idle_timeout;
        if let Some(since) = self.progress.waiting_since() {
            if now.duration_since(since) >= limits.send_timeout {
                return Verdict::Stalled;
            }
            next = next.min(since + limits.send_timeout);
        }
        let s = lock(&self.state);
        if s.in_flight > 0 {
            // A response that starts waiting on its client now is seen
            // within a quarter of the send timeout of its end.
            return Verdict::Wait(next.min(now + limits.send_timeout / 4));
        }
        let (limit, verdict) = if s.requests == 0 {
            (limits.header_read_timeout, Verdict::NoRequest)
        } else {
            (limits.idle_timeout, Verdict::Idle)
        };
        let due = s.idle_since + limit;
        if now >= due {
            return verdict;
        }
        Verdict::Wait(next.min(due))
    }
}

/// A request in flight on its connection.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = lock(&self.0.state);
        s.in_flight = s.in_flight.saturating_sub(1);
        s.idle_since = Instant::now();
    }
}

/// A response body that reports each frame handed to hyper as waiting on
/// the client until the next one is asked for, and keeps its request in
/// flight until it is dropped.
pub struct Tracked {
    inner: Body,
    progress: Arc<Progress>,
    _request: InFlight,
}

impl Tracked {
    pub fn new(inner: Body, progress: Arc<Progress>, request: InFlight) -> Tracked {
        Tracked {
            inner,
            progress,
            _request: request,
        }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.progress.taken();
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.progress.handed();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.progress.taken();
    }
}

/// What the connection task should do after the watchdog looked.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Look again then.
    Wait(Instant),
    /// Ask the connection to close (HTTP/2 GOAWAY), then look again then.
    Close(Instant),
    /// Drop the connection now.
    Drop,
}

/// The connection watchdog's memory: whether it already asked the
/// connection to close, and when it drops it if it has not gone.
#[derive(Debug, Default)]
pub struct Watchdog {
    drop_at: Option<Instant>,
}

impl Watchdog {
    /// When to look first.
    pub fn first_check(limits: &Limits) -> Instant {
        let soonest = limits
            .header_read_timeout
            .min(limits.idle_timeout)
            .min(limits.send_timeout / 4);
        Instant::now() + soonest
    }

    pub fn look(
        &mut self,
        now: Instant,
        activity: &Activity,
        limits: &Limits,
        metrics: &crate::metrics::Metrics,
    ) -> Action {
        if let Some(at) = self.drop_at {
            if now >= at && activity.in_flight() == 0 {
                return Action::Drop;
            }
        }
        let reason = match activity.verdict(now, limits) {
            // Once asked to close, look often for the moment nothing is in
            // flight.
            Verdict::Wait(next) => {
                return Action::Wait(match self.drop_at {
                    Some(_) => now + CLOSE_GRACE / 4,
                    None => next,
                });
            }
            Verdict::Stalled => {
                metrics.send_timeouts(limits.listener).inc();
                tracing::debug!(
                    "HTTP/1 connection closed: the client took no data for the send timeout"
                );
                return Action::Drop;
            }
            Verdict::NoRequest => "no_request",
            Verdict::Idle => "idle",
        };
        if self.drop_at.is_some() {
            return Action::Wait(now + CLOSE_GRACE / 4);
        }
        metrics.connection_closed(limits.listener, reason);
        self.drop_at = Some(now + CLOSE_GRACE);
        Action::Close(now + CLOSE_GRACE / 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            listener: "registry",
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            max_connections: 1,
            max_streams: 1,
            keepalive_interval: Duration::from_secs(20),
        }
    }

    #[tokio::test]
    async fn a_connection_is_silent_then_busy_then_idle_then_stalled() {
        let limits = limits();
        let a = Activity::new();
        let start = Instant::now();
        let Verdict::Wait(next) = a.verdict(start, &limits) else {
            panic!("closed at once");
        };
        assert!(next <= start + limits.header_read_timeout);
        assert_eq!(
            a.verdict(Instant::now() + Duration::from_secs(10), &limits),
            Verdict::NoRequest
        );
        let request = a.begin();
        assert!(matches!(
            a.verdict(start + Duration::from_secs(600), &limits),
            Verdict::Wait(_)
        ));
        drop(request);
        let done = Instant::now();
        assert!(matches!(
            a.verdict(done + Duration::from_secs(59), &limits),
            Verdict::Wait(_)
        ));
        assert_eq!(
            a.verdict(Instant::now() + Duration::from_secs(60), &limits),
            Verdict::Idle
        );
        let _request = a.begin();
        current_progress(&a).handed();
        assert!(matches!(
            a.verdict(Instant::now() + Duration::from_secs(29), &limits),
            Verdict::Wait(_)
        ));
        assert_eq!(
            a.verdict(Instant::now() + Duration::from_secs(30), &limits),
            Verdict::Stalled
        );
    }

    #[tokio::test]
    async fn the_watchdog_looks_again_exactly_when_something_can_change() {
        let limits = limits();
        let a = Activity::new();
        let now = Instant::now() + Duration::from_secs(1);
        let opened = lock(&a.state).idle_since;
        assert_eq!(
            a.verdict(now, &limits),
            Verdict::Wait(opened + limits.header_read_timeout),
            "nothing asked yet: at the header read timeout"
        );
        let request = a.begin();
        assert_eq!(
            a.verdict(now, &limits),
            Verdict::Wait(now + limits.send_timeout / 4),
            "in flight: a quarter of the send timeout on"
        );
        let progress = current_progress(&a);
        progress.handed();
        let since = progress.waiting_since().unwrap();
        assert_eq!(
            a.verdict(
                since + limits.send_timeout - Duration::from_secs(1),
                &limits
            ),
            Verdict::Wait(since + limits.send_timeout),
            "waiting on the client: never later than the send timeout's end"
        );
        progress.taken();
        drop(request);
        let idle = lock(&a.state).idle_since;
        assert_eq!(
            a.verdict(idle, &limits),
            Verdict::Wait(idle + limits.idle_timeout),
            "idle after a request: at the idle timeout"
        );
    }

    #[tokio::test]
    async fn a_connection_asked_to_close_is_dropped_only_once_nothing_is_in_flight() {
        let limits = limits();
        let metrics = crate::metrics::Metrics::new().unwrap();
        let a = Activity::new();
        let request = a.begin();
        let mut watchdog = Watchdog {
            drop_at: Some(Instant::now()),
        };
        let later = Instant::now() + Duration::from_secs(1);
        assert!(matches!(
            watchdog.look(later, &a, &limits, &metrics),
            Action::Wait(_)
        ));
        drop(request);
        assert!(matches!(
            watchdog.look(later, &a, &limits, &metrics),
            Action::Drop
        ));
    }

    #[tokio::test]
    async fn a_connection_asked_to_close_is_looked_at_every_quarter_of_the_grace() {
        let limits = limits();
        let metrics = crate::metrics::Metrics::new().unwrap();
        let a = Activity::new();
        let mut watchdog = Watchdog::default();
        let silent = lock(&a.state).idle_since + limits.header_read_timeout;
        assert_eq!(
            watchdog.look(silent, &a, &limits, &metrics),
            Action::Close(silent + CLOSE_GRACE / 4)
        );
        let later = silent + CLOSE_GRACE / 4;
        assert_eq!(
            watchdog.look(later, &a, &limits, &metrics),
            Action::Wait(later + CLOSE_GRACE / 4),
            "still silent: not asked twice"
        );
        let _request = a.begin();
        let past = silent + CLOSE_GRACE * 2;
        assert_eq!(
            watchdog.look(past, &a, &limits, &metrics),
            Action::Wait(past + CLOSE_GRACE / 4),
            "past the grace with a request in flight: looked at again soon"
        );
    }

    #[tokio::test]
    async fn a_stream_waiting_on_its_client_past_the_send_timeout_is_dropped() {
        let timeouts = IntCounter::new("t", "t").unwrap();
        let progress = Arc::new(Progress::default());
        let p = Arc::clone(&progress);
        let started = Instant::now();
        let tick = Duration::from_millis(100);
        // Takes a frame every tick for five ticks (each shorter than the
        // timeout), then stops taking.
        let stream = async move {
            for _ in 0..5 {
                p.handed();
                tokio::time::sleep(tick).await;
                p.taken();
            }
            p.handed();
            std::future::pending::<()>().await;
        };
        until_stalled(stream, progress, tick * 2, timeouts.clone()).await;
        assert_eq!(timeouts.get(), 1);
        let took = started.elapsed();
        assert!(took >= tick * 7 && took < tick * 10, "{took:?}");
    }
}
