//! The audit log: one JSON line per event (pull decisions, trust changes,
//! config reloads, exception use and expiry) to stdout or a file. Events go
//! through a bounded queue to a writer task, so a slow or full sink never
//! blocks a pull: when the queue is full the event is dropped and counted.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::metrics::Metrics;

mod denials;
pub use denials::{Denial, Denials};

/// Where audit events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    File(PathBuf),
}

/// Bytes of queued lines written together at most.
const AUDIT_BATCH: usize = 256 << 10;

/// What the audit log records, one line each, named by its `event` field.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A manifest served or refused.
    Decision(Decision<'a>),
    /// A pull refused because the exception that admitted it expired
    /// (recorded beside its `decision`).
    ExceptionExpired(Decision<'a>),
    ConfigReload(ConfigReload<'a>),
    /// What an authority trusts changed (keys or certificates added or removed).
    TrustChange(TrustChange<'a>),
    /// A trust document was refused; the last good material stays.
    TrustDocumentRefused(DocumentRefused<'a>),
    /// Upstream credentials were loaded (from their file or helper; the
    /// secret is never recorded).
    CredentialsLoaded(CredentialsLoaded<'a>),
    /// A tag that named a verified (allowed) manifest now names another:
    /// recorded with the first decision through the tag after the move.
    TagMoved(TagMoved<'a>),
}

#[derive(Debug, Serialize)]
pub struct TagMoved<'a> {
    pub upstream: &'a str,
    pub repository: &'a str,
    pub tag: &'a str,
    pub old_digest: String,
    /// Always `allow`: only a verified mapping's move is recorded.
    pub old_decision: &'a str,
    pub new_digest: Option<String>,
    pub new_decision: &'a str,
    pub new_reason: &'a str,
    /// The decision on the new digest (its `decision` line has the same id).
    pub id: &'a str,
}

#[derive(Debug, Serialize)]
pub struct CredentialsLoaded<'a> {
    pub upstream: &'a str,
    /// The host this process runs on (a pod's name).
    pub instance: &'a str,
    /// `file` or `helper`.
    pub source: &'a str,
    pub helper: Option<&'a str>,
    pub file: Option<&'a str>,
    /// Counts the loads of this upstream's credentials since start.
    pub generation: u64,
}

/// This host's name (`HOSTNAME`, else the kernel's), read once.
pub fn instance() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    })
}

/// One pull decision.
#[derive(Debug, Clone, Serialize)]
pub struct Decision<'a> {
    /// Names this decision: a denied client gets the same id in its 403,
    /// so the error leads to the line (`portcullis why ID`).
    pub id: &'a str,
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
    /// Served through a tag mapping last checked this many seconds ago,
    /// past `tag_ttl`, because the upstream was unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_stale_seconds: Option<u64>,
}

/// A reload of the config, and what became of it.
#[derive(Debug, Serialize)]
pub struct ConfigReload<'a> {
    /// What asked for it: `admin`, `sighup`, `file_change`, `trust_refresh:<authority>`.
    pub trigger: &'a str,
    #[serde(flatten)]
    pub result: ReloadResult,
}

#[derive(Debug, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReloadResult {
    /// Put in force as trust epoch `epoch`; `restart_needed` names changed
    /// sections that apply only after a restart.
    Ok {
        epoch: u64,
        restart_needed: Vec<&'static str>,
    },
    /// The config file, the files it names and the trust material read
    /// exactly as what is in force: nothing was changed or retired.
    Unchanged { epoch: u64 },
    /// Refused; the running config stays.
    Error { error: String },
}

#[derive(Debug, Serialize)]
pub struct TrustChange<'a> {
    pub authority: &'a str,
    /// Fingerprints now trusted that were not.
    pub added: Vec<&'a str>,
    /// Fingerprints no longer trusted.
    pub removed: Vec<&'a str>,
    pub epoch: u64,
    /// The reload trigger that brought the change.
    pub source: &'a str,
}

#[derive(Debug, Serialize)]
pub struct DocumentRefused<'a> {
    pub authority: &'a str,
    pub url: &'a str,
    /// Why, as a stable word (`replayed`, `unusable_material`, ...).
    pub reason: &'a str,
    pub error: String,
}

/// Names one decision: 16 random hex digits, held inline (no allocation
/// on the cached path).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DecisionId([u8; 16]);

impl DecisionId {
    pub fn new() -> DecisionId {
        let mut bytes = [0u8; 8];
        // The system generator does not fail on the platforms aws-lc
        // supports; were it to, the id would still name the line, only less
        // uniquely.
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        let mut id = [0u8; 16];
        for (i, b) in bytes.iter().enumerate() {
            id[2 * i] = HEX[usize::from(b >> 4)];
            id[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        DecisionId(id)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("0000000000000000")
    }
}

impl Default for DecisionId {
    fn default() -> DecisionId {
        DecisionId::new()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl std::fmt::Debug for DecisionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for DecisionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub struct Audit {
    tx: mpsc::Sender<String>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    reopen: Arc<tokio::sync::Notify>,
    /// What is being denied now, kept from the decisions recorded here.
    denials: Denials,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Audit")
    }
}

/// The sink as the writer holds it. A file is reopened by its path when it
/// was renamed or removed (logrotate's default) or when asked (SIGUSR1).
enum Out {
    Stdout(tokio::io::Stdout),
    File {
        path: PathBuf,
        file: tokio::fs::File,
        /// Device and inode of the file open, to see a rename.
        id: Option<(u64, u64)>,
    },
}

impl Out {
    async fn open(sink: &Sink) -> std::io::Result<Out> {
        Ok(match sink {
            Sink::Stdout => Out::Stdout(tokio::io::stdout()),
            Sink::File(path) => {
                let file = open_append(path).await?;
                let id = file_id(&file.metadata().await?);
                Out::File {
                    path: path.clone(),
                    file,
                    id,
                }
            }
        })
    }

    /// Reopens the file when asked or when its path no longer names it.
    async fn follow_rotation(&mut self, asked: bool) {
        let Out::File { path, file, id } = self else {
            return;
        };
        let moved = match tokio::fs::metadata(&*path).await {
            Ok(m) => file_id(&m) != *id,
            Err(_) => true,
        };
        if !asked && !moved {
            return;
        }
        let _ = file.flush().await;
        // What now stands at the path must be a plain file (or nothing):
        // a symlink or FIFO put there would send the log elsewhere or
        // block the writer.
        if let Ok(m) = tokio::fs::symlink_metadata(&*path).await
            && !m.file_type().is_file()
        {
            tracing::warn!(path = %path.display(), "the audit path is not a plain file; writing to the file open");
            return;
        }
        match open_append(path).await {
            Ok(new) => {
                *id = match new.metadata().await {
                    Ok(m) => file_id(&m),
                    Err(_) => None,
                };
                *file = new;
                tracing::info!(path = %path.display(), "audit log reopened");
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot reopen the audit log; writing to the file open");
            }
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Stdout(o) => {
                o.write_all(bytes).await?;
                o.flush().await
            }
            Out::File { file, .. } => {
                file.write_all(bytes).await?;
                file.flush().await
            }
        }
    }
}

async fn open_append(path: &std::path::Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

#[cfg(unix)]
fn file_id(m: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

impl Audit {
    /// Starts the writer task. It ends when every `Audit` handle is gone,
    /// after writing what is queued.
    pub async fn start(
        sink: &Sink,
        queue: usize,
        denials: u64,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<Audit>> {
        let (tx, mut rx) = mpsc::channel::<String>(queue.max(1));
        let mut out = Out::open(sink).await?;
        let reopen = Arc::new(tokio::sync::Notify::new());
        let asked = Arc::clone(&reopen);
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
                // Whole batches of whole lines: a rotation lands between
                // lines, never inside one.
                let signalled = futures_util::FutureExt::now_or_never(asked.notified()).is_some();
                out.follow_rotation(signalled).await;
                if let Err(e) = out.write_all(batch.as_bytes()).await {
                    tracing::warn!(error = %e, "audit sink write failed");
                }
            }
        });
        Ok(Arc::new(Audit {
            tx,
            denials: Denials::new(denials, Arc::clone(&clock)),
            clock,
            metrics,
            reopen,
        }))
    }

    /// Queues `event` as one line, with the time in front. A full queue
    /// drops it and counts the drop; serialising builds no JSON tree.
    /// Asks the writer to reopen the audit file before its next write
    /// (SIGUSR1, after a rotation that copied or moved it).
    pub fn reopen(&self) {
        self.reopen.notify_one();
    }

    /// What is being denied now.
    pub fn denials(&self) -> &Denials {
        &self.denials
    }

    pub fn record(&self, event: &Event<'_>) {
        if let Event::Decision(d) = event {
            self.denials.decided(d);
        }
        #[derive(serde::Serialize)]
        struct Line<'a> {
            time: String,
            #[serde(flatten)]
            event: &'a Event<'a>,
        }
        let line = Line {
            time: humantime::format_rfc3339_millis(self.clock.now()).to_string(),
            event,
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
}
