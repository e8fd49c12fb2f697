//! What each `portcullis` subcommand does, as library functions returning
//! typed reports, so `main.rs` only parses arguments, prints and exits.
//!
//! - [`check_config`]: validate a config file and summarise it
//! - [`verify`]: decide on one image exactly as the proxy would
//! - [`verify_bundle`]: verify one Sigstore bundle (the conformance CLI protocol)
//! - [`trust_status`]: what `GET /admin/trust` and `GET /admin/policies` say
//! - [`why`]: the last decision for an image, or a 403's decision, from the audit log
//! - [`serve`]: run the proxy until a shutdown signal
//!
//! A report implements [`Display`](fmt::Display) (the text the command
//! prints) and `Serialize` (a stable JSON shape); it and every command error
//! say which [`Exit`] the process ends with. Commands that need the proxy
//! load the config and start a runtime through [`with_runtime`], once.

pub mod check_config;
pub mod cli;
pub mod denials;
pub mod lints;
pub mod nodes;
pub mod serve;
pub mod trust_status;
pub mod verify;
pub mod verify_bundle;
pub mod why;

use std::fmt;
use std::future::Future;
use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::verify::Reason;

pub use check_config::{CheckConfigError, CheckConfigReport, check_config};
pub use denials::{DenialsError, DenialsReport, denials};
pub use serve::{ServeError, serve};
pub use trust_status::{TrustStatusError, TrustStatusReport, trust_status};
pub use verify::{VerifyError, VerifyReport, verify_image};
pub use verify_bundle::{BundleRejected, BundleRequest, BundleVerified, verify_bundle};
pub use why::{WhyError, WhyReport, why};

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done as asked; `verify` allowed the image, the bundle verified.
    Success,
    /// 1: a definite no: `verify` denied, the bundle was rejected, the
    /// config is invalid, the proxy failed.
    Failure,
    /// 2: `verify` or `trust status` could not get far enough to decide.
    NoDecision,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::NoDecision => 2,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> std::process::ExitCode {
        std::process::ExitCode::from(exit.code())
    }
}

/// A command's result, printed on stdout.
pub trait Report: fmt::Display + serde::Serialize {
    fn exit(&self) -> Exit;

    /// A line for stderr besides the report (why `verify` reached no decision).
    fn diagnostic(&self) -> Option<String> {
        None
    }
}

/// Why a command produced no report; its message goes to stderr.
pub trait Failure: std::error::Error {
    fn exit(&self) -> Exit;
}

/// The config could not be loaded or the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Loads the config at `path`, starts a multi-thread runtime and runs
/// `command` on it to completion.
pub fn with_runtime<T, E, F, Fut>(path: &Path, command: F) -> Result<T, E>
where
    E: From<StartError>,
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let config = Config::load(path).map_err(StartError::from)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    runtime.block_on(command(config))
}

/// Serializes a [`Reason`] as its stable code (`predicate_failed`).
fn reason_code<S: serde::Serializer>(reason: &Reason, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(reason.as_str())
}
