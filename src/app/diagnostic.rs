//! The app a diagnostic command (`verify`, `trust status`) decides with:
//! the live config, on a private cache directory. Opening a content store
//! empties its `tmp/` and creates directories, so a diagnostic run on the
//! live one would cut off a blob the running server is filling.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{App, BuildError};
use crate::audit::{DecisionId, Sink};
use crate::config::{Config, TrustedRootSource};
use crate::trust::signed::MARKS_FILE;

/// A private directory, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl App {
    /// `config` on a private cache directory seeded with a copy of the live
    /// trust state (verified TUF metadata, signed-document version marks),
    /// so it trusts exactly what the server would; no shared bucket, no
    /// Redis, and audit events to a scratch file. The live cache is only
    /// read. The app lives as long as the returned [`Scratch`].
    pub async fn build_diagnostic(config: &Config) -> Result<(Arc<App>, Scratch), BuildError> {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-diagnostic-{}-{}",
            std::process::id(),
            DecisionId::new()
        ));
        let scratch = Scratch(dir.clone());
        let store_error = |source| BuildError::Store {
            dir: dir.display().to_string(),
            source,
        };
        let live = &config.cache.dir;
        let mut c = config.clone();
        c.cache.dir = dir.join("cache");
        c.cache.s3 = None;
        c.cluster = None;
        c.audit.sink = Sink::File(dir.join("audit.jsonl"));
        std::fs::create_dir_all(&c.cache.dir).map_err(store_error)?;
        if live.join(MARKS_FILE).is_file() {
            let marks = c.cache.dir.join(MARKS_FILE);
            if let Some(parent) = marks.parent() {
                std::fs::create_dir_all(parent).map_err(store_error)?;
            }
            std::fs::copy(live.join(MARKS_FILE), marks).map_err(store_error)?;
        }
        for a in &mut c.authorities {
            if let Some(TrustedRootSource::Tuf(t)) = &mut a.trusted_root
                && let Ok(inside) = t.cache_dir.strip_prefix(live)
            {
                let private = c.cache.dir.join(inside);
                copy_tree(&t.cache_dir, &private).map_err(store_error)?;
                t.cache_dir = private;
            }
        }
        let app = App::build(&c).await?;
        Ok((app, scratch))
    }
}

/// Copies the files under `from` (absent: nothing) to `to`.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    std::fs::create_dir_all(to)?;
    for e in entries {
        let e = e?;
        let kind = e.file_type()?;
        if kind.is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        } else if kind.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}
