//! Upstream credentials: read from a JSON file (`{"username": …, "password": …}`)
//! and re-read when the file changes, or asked of a docker credential helper
//! (`docker-credential-<name> get`) and kept for `ttl` or until the upstream
//! refuses them. Secrets never appear in `Debug` output or logs.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Deserialize;

use crate::audit::{Audit, CredentialsLoaded, Event};

/// A string that is never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read credentials file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credentials file {path} is not {{\"username\", \"password\"}} JSON")]
    Parse { path: PathBuf },
    /// The helper could not be run, failed, or answered something else
    /// than `{"Username", "Secret"}` (its output is never quoted).
    #[error("credential helper {program}: {why}")]
    Helper { program: String, why: String },
}

/// The most a helper may print, and how long it may take.
const HELPER_OUTPUT: usize = 64 << 10;
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// A refusal asks the helper again at most once in this long, and a
/// failed run is not repeated sooner: refusals a client can
/// provoke (a repository the identity may not read) cannot make every
/// request run the helper.
const HELPER_REASK: std::time::Duration = std::time::Duration::from_secs(30);

/// A docker credential helper for one upstream.
#[derive(Debug)]
pub struct Helper {
    /// `docker-credential-<name>` (looked up on `PATH`) or a path.
    pub program: String,
    /// What the helper is asked about (the upstream's host).
    pub server: String,
    /// How long an answer is used before the helper is asked again.
    pub ttl: std::time::Duration,
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: Secret,
}

impl Helper {
    async fn ask(&self) -> Result<Credentials, CredentialsError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let fail = |why: String| CredentialsError::Helper {
            program: self.program.clone(),
            why,
        };
        let mut child = tokio::process::Command::new(&self.program)
            .arg("get")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot run it: {e}")))?;
        let run = async {
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(self.server.as_bytes()).await?;
            }
            let mut out = Vec::new();
            if let Some(stdout) = child.stdout.take() {
                stdout
                    .take(HELPER_OUTPUT as u64 + 1)
                    .read_to_end(&mut out)
                    .await?;
            }
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, out))
        };
        let (status, out) = tokio::time::timeout(HELPER_TIMEOUT, run)
            .await
            .map_err(|_| fail(format!("no answer within {}s", HELPER_TIMEOUT.as_secs())))?
            .map_err(|e| fail(e.to_string()))?;
        if !status.success() {
            return Err(fail(format!("exited with {status}")));
        }
        if out.len() > HELPER_OUTPUT {
            return Err(fail("answered more than 64 KiB".into()));
        }
        let answer: HelperAnswer = serde_json::from_slice(&out)
            .map_err(|_| fail("did not answer {\"Username\", \"Secret\"} JSON".into()))?;
        Ok(Credentials {
            username: answer.username,
            password: answer.secret,
        })
    }
}

/// The credentials of one upstream: a file, reloaded when its mtime or
/// size changes, or a helper, asked again after its `ttl` or a refusal.
#[derive(Debug)]
pub struct CredentialsFile {
    path: Option<PathBuf>,
    helper: Option<Helper>,
    state: Mutex<Option<Loaded>>,
    audit: std::sync::OnceLock<(Arc<Audit>, String)>,
    /// When the helper last failed, and why (repeated until `HELPER_REASK`).
    failed: Mutex<Option<(std::time::Instant, String)>>,
    /// When a refusal last had the helper asked again.
    reasked: Mutex<Option<std::time::Instant>>,
    /// One helper run at a time; the others wait for its answer.
    asking: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone)]
struct Loaded {
    /// The file's mtime and size; for a helper, when it answered.
    stamp: (Option<SystemTime>, u64),
    credentials: Credentials,
    generation: u64,
}

impl CredentialsFile {
    pub fn new(path: Option<PathBuf>) -> Self {
        CredentialsFile {
            path,
            helper: None,
            state: Mutex::new(None),
            audit: std::sync::OnceLock::new(),
            failed: Mutex::new(None),
            reasked: Mutex::new(None),
            asking: tokio::sync::Mutex::new(()),
        }
    }

    pub fn helper(helper: Helper) -> Self {
        CredentialsFile {
            path: None,
            helper: Some(helper),
            state: Mutex::new(None),
            audit: std::sync::OnceLock::new(),
            failed: Mutex::new(None),
            reasked: Mutex::new(None),
            asking: tokio::sync::Mutex::new(()),
        }
    }

    pub fn is_helper(&self) -> bool {
        self.helper.is_some()
    }

    /// The upstream refused the credentials: a helper is asked again at the
    /// next request (a file is re-read when it changes).
    pub fn refused(&self) {
        if self.helper.is_some() {
            let mut reasked = self.reasked.lock().unwrap_or_else(|e| e.into_inner());
            if reasked.is_some_and(|at| at.elapsed() < HELPER_REASK) {
                return;
            }
            *reasked = Some(std::time::Instant::now());
            if let Some(l) = self.lock().as_mut() {
                // Stale, with its generation kept (tokens are cached by it).
                l.stamp = (None, 0);
            }
        }
    }

    /// Where each load is recorded, as the credentials of `upstream`.
    pub fn attach_audit(&self, audit: Arc<Audit>, upstream: &str) {
        let _ = self.audit.set((audit, upstream.to_string()));
    }

    fn audit_load(&self, generation: u64) {
        let Some((audit, upstream)) = self.audit.get() else {
            return;
        };
        let file = self.path.as_ref().map(|p| p.display().to_string());
        audit.record(&Event::CredentialsLoaded(CredentialsLoaded {
            upstream,
            instance: crate::audit::instance(),
            source: if self.helper.is_some() {
                "helper"
            } else {
                "file"
            },
            helper: self.helper.as_ref().map(|h| h.program.as_str()),
            file: file.as_deref(),
            generation,
        }));
    }

    /// The current credentials (`None` for anonymous access) and a generation
    /// number that changes whenever they do. Each load is audited (never
    /// the secret).
    pub async fn current(&self) -> Result<(Option<Credentials>, u64), CredentialsError> {
        if let Some(helper) = &self.helper {
            return self.ask_helper(helper).await;
        }
        let Some(path) = &self.path else {
            return Ok((None, 0));
        };
        let read_err = |source| CredentialsError::Read {
            path: path.clone(),
            source,
        };
        let meta = tokio::fs::metadata(path).await.map_err(read_err)?;
        let stamp = (meta.modified().ok(), meta.len());
        if let Some(l) = self.lock().as_ref().filter(|l| l.stamp == stamp) {
            return Ok((Some(l.credentials.clone()), l.generation));
        }
        let bytes = tokio::fs::read(path).await.map_err(read_err)?;
        let credentials: Credentials = serde_json::from_slice(&bytes)
            .map_err(|_| CredentialsError::Parse { path: path.clone() })?;
        let mut state = self.lock();
        let generation = state.as_ref().map_or(1, |l| l.generation + 1);
        tracing::info!(file = %path.display(), username = %credentials.username, generation, "loaded upstream credentials");
        *state = Some(Loaded {
            stamp,
            credentials: credentials.clone(),
            generation,
        });
        drop(state);
        self.audit_load(generation);
        Ok((Some(credentials), generation))
    }

    async fn ask_helper(
        &self,
        helper: &Helper,
    ) -> Result<(Option<Credentials>, u64), CredentialsError> {
        let fresh = |l: &Loaded| {
            l.stamp
                .0
                .and_then(|at| at.elapsed().ok())
                .is_some_and(|age| age < helper.ttl)
        };
        if let Some(l) = self.lock().as_ref().filter(|l| fresh(l)) {
            return Ok((Some(l.credentials.clone()), l.generation));
        }
        let _one = self.asking.lock().await;
        if let Some(l) = self.lock().as_ref().filter(|l| fresh(l)) {
            return Ok((Some(l.credentials.clone()), l.generation));
        }
        let recent_failure = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < HELPER_REASK)
            .map(|(_, why)| why.clone());
        if let Some(why) = recent_failure {
            return Err(CredentialsError::Helper {
                program: helper.program.clone(),
                why,
            });
        }
        let credentials = match helper.ask().await {
            Ok(c) => c,
            Err(e) => {
                let why = match &e {
                    CredentialsError::Helper { why, .. } => why.clone(),
                    other => other.to_string(),
                };
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((std::time::Instant::now(), why));
                return Err(e);
            }
        };
        *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut state = self.lock();
        if let Some(l) = state.as_mut().filter(|l| l.credentials == credentials) {
            // The same answer: cached tokens stay good, nothing to record.
            l.stamp = (Some(SystemTime::now()), 0);
            return Ok((Some(credentials), l.generation));
        }
        let generation = state.as_ref().map_or(1, |l| l.generation + 1);
        tracing::info!(helper = %helper.program, server = %helper.server, username = %credentials.username, generation, "loaded upstream credentials");
        *state = Some(Loaded {
            stamp: (Some(SystemTime::now()), 0),
            credentials: credentials.clone(),
            generation,
        });
        drop(state);
        self.audit_load(generation);
        Ok((Some(credentials), generation))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Loaded>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let c = Credentials {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn file_change_is_picked_up_with_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.json");
        std::fs::write(&path, r#"{"username":"a","password":"one"}"#).unwrap();
        let file = CredentialsFile::new(Some(path.clone()));
        let (c1, g1) = file.current().await.unwrap();
        assert_eq!(c1.unwrap().password.expose(), "one");
        std::fs::write(&path, r#"{"username":"a","password":"second"}"#).unwrap();
        let (c2, g2) = file.current().await.unwrap();
        assert_eq!(c2.unwrap().password.expose(), "second");
        assert_ne!(g1, g2);
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            file.current().await,
            Err(CredentialsError::Parse { .. })
        ));
    }
}
