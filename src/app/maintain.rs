//! The maintenance loop: keeps policy and trust current while serving.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::App;
use crate::config::{self, Config};
use crate::trust::refresh::{self, Schedule};

/// How often watched files are checked for changes and sources for being due.
const WATCH_TICK: Duration = Duration::from_secs(1);

/// Keeps policy and trust current until `shutdown`: reloads on SIGHUP and
/// when the config file or a file it names changes, and refreshes each URL
/// source and TUF repository when [`Schedule`] says it is due. SIGUSR1
/// reopens the audit file.
pub async fn maintain(app: Arc<App>, shutdown: CancellationToken) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    #[cfg(unix)]
    let mut usr1 =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
    let mut stamps = file_stamps(&app.config());
    let mut schedule = Schedule::default();
    let (finished, mut reports) = tokio::sync::mpsc::unbounded_channel::<(String, Duration)>();
    let mut tick = tokio::time::interval(WATCH_TICK);
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(unix)]
        let reopen = async {
            match usr1.as_mut() {
                Some(u) => u.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<Option<()>>();
        #[cfg(not(unix))]
        let reopen = std::future::pending::<Option<()>>();
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some((key, wait)) = reports.recv() => schedule.finished(key, wait, Instant::now()),
            _ = reopen => app.audit.reopen(),
            _ = hup => {
                // Stamped before the reload reads the files: a change made
                // while it runs is seen at the next tick.
                stamps = file_stamps(&app.config());
                let _ = app.reload("sighup").await;
            }
            _ = tick.tick() => {
                app.recheck_freshness().await;
                let now = file_stamps(&app.config());
                if now != stamps {
                    stamps = now;
                    // Stamped before the reload: a change made while it runs
                    // is seen at the next tick (a reload that named other
                    // files is followed by one more, which changes nothing).
                    let _ = app.reload("file_change").await;
                }
                let now_due = std::mem::take(&mut *app.refetch.lock().unwrap_or_else(|e| e.into_inner()));
                for key in now_due {
                    schedule.due_now(&key, Instant::now());
                }
                let held = app.sources.snapshot();
                let all = refresh::refreshables(&app.config().authorities);
                for r in schedule.take_due(all, |k| held.contains_key(k), Instant::now()) {
                    let (app, finished) = (Arc::clone(&app), finished.clone());
                    tokio::spawn(async move {
                        let outcome = app.refresh(&r).await;
                        let _ = finished.send((r.key(), refresh::next_wait(&r, &outcome)));
                    });
                }
            }
        }
    }
}

/// Modification times (and sizes) of the config file and every file it names.
fn file_stamps(config: &Config) -> Vec<Option<(SystemTime, u64)>> {
    watched_files(config)
        .into_iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.len()))
        })
        .collect()
}

/// The config file and every file it names, in a stable order.
pub(super) fn watched_files(config: &Config) -> Vec<&Path> {
    let mut files: Vec<&Path> = config.source_file.iter().map(|p| p.as_path()).collect();
    for a in &config.authorities {
        match &a.kind {
            config::AuthorityKind::Keys(p) | config::AuthorityKind::CaRoots(p) => {
                files.extend(p.iter().filter_map(config::Pem::file));
            }
            config::AuthorityKind::Source(s) => {
                files.extend(s.signed_by.iter().map(|p| p.as_path()));
                files.extend(s.ca_file.iter().map(|p| p.as_path()));
            }
            config::AuthorityKind::Keyless { .. } => {}
        }
        match &a.trusted_root {
            Some(config::TrustedRootSource::File(p)) => files.push(p),
            Some(config::TrustedRootSource::Tuf(t)) => {
                files.extend(t.root.iter().chain(&t.ca_file).map(|p| p.as_path()));
            }
            _ => {}
        }
    }
    files
}
