//! The audit log: one JSON line per event (pull decisions, trust changes,
//! config reloads, exception use and expiry) to stdout or a file. Events go
//! through a bounded queue to a writer task, so a slow or full sink never
//! blocks a pull: when the queue is full the event is dropped and counted.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::metrics::Metrics;

/// Where audit events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    File(PathBuf),
}

/// Bytes of queued lines written together at most.
const AUDIT_BATCH: usize = 256 << 10;

/// One pull decision, as written to the audit log.
#[derive(Debug, serde::Serialize)]
pub struct Decision<'a> {
    pub upstream: &'a str,
    pub repository: &'a str,
    pub reference: String,
    pub digest: Option<String>,
    pub decision: &'a str,
    pub policy: &'a str,
    pub reason: &'a str,
    pub authorities: Vec<String>,
    pub exception: Option<&'a str>,
    pub trust_epoch: u64,
    pub client: Option<String>,
    pub identity: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
}

pub struct Audit {
    tx: mpsc::Sender<String>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl Audit {
    /// Starts the writer task. It ends when every `Audit` handle is gone,
    /// after writing what is queued.
    pub async fn start(
        sink: &Sink,
        queue: usize,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<Audit>> {
        let (tx, mut rx) = mpsc::channel::<String>(queue.max(1));
        let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match sink {
            Sink::Stdout => Box::new(tokio::io::stdout()),
            Sink::File(path) => Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await?,
            ),
        };
        tokio::spawn(async move {
            // Lines queued while the previous write ran go out in one write:
            // under load a handful of writes per second instead of one
            // blocking hand-off per decision.
            while let Some(mut batch) = rx.recv().await {
                while batch.len() < AUDIT_BATCH {
                    match rx.try_recv() {
                        Ok(line) => batch.push_str(&line),
                        Err(_) => break,
                    }
                }
                if let Err(e) = out.write_all(batch.as_bytes()).await {
                    tracing::warn!(error = %e, "audit sink write failed");
                }
                let _ = out.flush().await;
            }
        });
        Ok(Arc::new(Audit { tx, clock, metrics }))
    }

    /// Queues `event` (an object; `time` and `event` are added).
    /// Records a typed event (no intermediate JSON tree on the request path).
    pub fn record_typed<T: serde::Serialize>(&self, kind: &str, event: &T) {
        #[derive(serde::Serialize)]
        struct Line<'a, T> {
            time: String,
            event: &'a str,
            #[serde(flatten)]
            body: &'a T,
        }
        let line = Line {
            time: humantime::format_rfc3339_millis(self.clock.now()).to_string(),
            event: kind,
            body: event,
        };
        match serde_json::to_string(&line) {
            Ok(mut line) => {
                line.push('\n');
                if self.tx.try_send(line).is_err() {
                    self.metrics.audit_dropped.inc();
                }
            }
            Err(e) => tracing::error!(error = %e, "audit event not serializable"),
        }
    }

    pub fn record(&self, kind: &str, mut event: Value) {
        if let Value::Object(map) = &mut event {
            map.insert(
                "time".into(),
                json!(humantime::format_rfc3339_millis(self.clock.now()).to_string()),
            );
            map.insert("event".into(), json!(kind));
        }
        let mut line = event.to_string();
        line.push('\n');
        if self.tx.try_send(line).is_err() {
            self.metrics.audit_dropped.inc();
        }
    }
}
