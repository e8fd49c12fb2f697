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
            while let Some(line) = rx.recv().await {
                if let Err(e) = out.write_all(line.as_bytes()).await {
                    tracing::warn!(error = %e, "audit sink write failed");
                }
                if rx.is_empty() {
                    let _ = out.flush().await;
                }
            }
            let _ = out.flush().await;
        });
        Ok(Arc::new(Audit { tx, clock, metrics }))
    }

    /// Queues `event` (an object; `time` and `event` are added).
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
