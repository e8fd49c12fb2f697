//! `portcullis serve`: run the proxy until `shutdown` resolves, then drain.

use std::future::Future;
use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::{Exit, Failure, StartError, with_runtime};
use crate::RunError;

/// Runs the proxy from the config at `path`; `shutdown` (the binary's
/// SIGTERM/SIGINT watch) starts the drain when it resolves.
pub fn serve<S>(path: &Path, shutdown: S) -> Result<(), ServeError>
where
    S: Future<Output = ()> + Send + 'static,
{
    with_runtime(path, |config| async move {
        let token = CancellationToken::new();
        let cancel = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            cancel.cancel();
        });
        crate::run(config, token).await.map_err(ServeError::Run)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Before serving: printed on stderr.
    #[error(transparent)]
    Start(#[from] StartError),
    /// While serving: logged.
    #[error(transparent)]
    Run(#[from] RunError),
}

impl Failure for ServeError {
    fn exit(&self) -> Exit {
        Exit::Failure
    }
}
