//! Upstream credentials, read from a JSON file (`{"username": …, "password": …}`)
//! and re-read when the file changes. Secrets never appear in `Debug` output.

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Deserialize;

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
}

/// The credentials of one upstream, reloaded when the file's mtime or size changes.
#[derive(Debug)]
pub struct CredentialsFile {
    path: Option<PathBuf>,
    state: Mutex<Option<Loaded>>,
}

#[derive(Debug, Clone)]
struct Loaded {
    stamp: (Option<SystemTime>, u64),
    credentials: Credentials,
    generation: u64,
}

impl CredentialsFile {
    pub fn new(path: Option<PathBuf>) -> Self {
        CredentialsFile {
            path,
            state: Mutex::new(None),
        }
    }

    /// The current credentials (`None` for anonymous access) and a generation
    /// number that changes whenever they do.
    pub async fn current(&self) -> Result<(Option<Credentials>, u64), CredentialsError> {
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
