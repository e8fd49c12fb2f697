//! `portcullis trust status`: load every authority (fetching URL sources
//! once) and report what `GET /admin/trust` and `GET /admin/policies` say.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use super::{Exit, Failure, Report, StartError, with_runtime};
use crate::app::{App, BuildError};

/// Builds the app from the config at `path` and reads its trust and policy status.
pub fn trust_status(path: &Path) -> Result<TrustStatusReport, TrustStatusError> {
    with_runtime(path, |config| async move {
        let (app, _scratch) = App::build_diagnostic(&config).await?;
        Ok(TrustStatusReport::new(&app))
    })
}

#[derive(Debug, thiserror::Error)]
pub enum TrustStatusError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl Failure for TrustStatusError {
    fn exit(&self) -> Exit {
        Exit::NoDecision
    }
}

/// The admin endpoints' JSON, side by side. Printed as pretty JSON; the
/// fields are in the order the admin endpoints' keys sort in.
#[derive(Debug, Serialize)]
pub struct TrustStatusReport {
    /// `GET /admin/policies`.
    pub policies: crate::app::PolicyStatus,
    /// `GET /admin/trust`.
    pub trust: crate::app::TrustStatus,
}

impl TrustStatusReport {
    pub fn new(app: &App) -> TrustStatusReport {
        TrustStatusReport {
            policies: app.policy_status(),
            trust: app.trust_status(),
        }
    }
}

impl Report for TrustStatusReport {
    fn exit(&self) -> Exit {
        Exit::Success
    }
}

impl fmt::Display for TrustStatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string_pretty(self).map_err(|_| fmt::Error)?;
        writeln!(f, "{json}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_prints_as_pretty_json_with_policies_before_trust() {
        let report = TrustStatusReport {
            policies: crate::app::PolicyStatus {
                epoch: 1,
                policies: vec![],
                exceptions: vec![],
            },
            trust: crate::app::TrustStatus {
                epoch: 1,
                authorities: vec![],
            },
        };
        assert_eq!(
            report.to_string(),
            "{\n  \"policies\": {\n    \"epoch\": 1,\n    \"policies\": [],\n    \"exceptions\": []\n  },\n  \"trust\": {\n    \"epoch\": 1,\n    \"authorities\": []\n  }\n}\n"
        );
        assert_eq!(report.exit(), Exit::Success);
    }
}
