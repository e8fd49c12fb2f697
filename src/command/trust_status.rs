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

/// The admin endpoints' JSON, side by side (`--output json`); printed as
/// tables for people.
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
        use crate::app::{Availability, RootStatus, SourceStatus};
        let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
        writeln!(f, "trust (epoch {})", self.trust.epoch)?;
        let mut rows = vec![
            [
                "AUTHORITY",
                "SOURCE",
                "AVAILABLE",
                "TRUSTS",
                "ROOT",
                "LAST VERIFIED",
                "STALE AFTER",
                "EARLIEST EXPIRY",
                "LAST ERROR",
            ]
            .map(String::from),
        ];
        for a in &self.trust.authorities {
            let source = match &a.source {
                SourceStatus::Files { files } => files.join(", "),
                SourceStatus::Keyless(k) => (*k).to_string(),
                SourceStatus::Url { url, .. } => url.clone(),
            };
            let available = match &a.available {
                None | Some(Availability::Available(true)) => "yes".to_string(),
                Some(Availability::Available(false)) => "no".to_string(),
                Some(Availability::Unavailable(why)) => format!("no: {why}"),
            };
            let root = match &a.trusted_root {
                None => "-".to_string(),
                Some(RootStatus::Embedded(e)) => (*e).to_string(),
                Some(RootStatus::File { file }) => file.display().to_string(),
                Some(RootStatus::Tuf { tuf, .. }) => tuf.clone(),
            };
            rows.push([
                a.name.clone(),
                source,
                available,
                a.fingerprints.len().to_string(),
                root,
                dash(a.last_verified.as_deref()),
                dash(a.stale_after.as_deref()),
                dash(a.earliest_expiry.as_deref()),
                a.last_error
                    .as_ref()
                    .map_or("-".into(), |e| format!("{}: {}", e.at, e.error)),
            ]);
        }
        table(f, &rows)?;
        let trusted: Vec<[String; 3]> = self
            .trust
            .authorities
            .iter()
            .flat_map(|a| {
                let revoked = a
                    .revoked
                    .iter()
                    .map(|r| [a.name.clone(), r.clone(), "revoked".into()]);
                a.fingerprints
                    .iter()
                    .map(|fp| [a.name.clone(), fp.clone(), "trusted".into()])
                    .chain(revoked)
                    .collect::<Vec<_>>()
            })
            .collect();
        if !trusted.is_empty() {
            writeln!(f, "\nfingerprints")?;
            let mut rows = vec![["AUTHORITY", "FINGERPRINT", ""].map(String::from)];
            rows.extend(trusted);
            table(f, &rows)?;
        }
        writeln!(f, "\npolicies (epoch {})", self.policies.epoch)?;
        let mut rows = vec![["POLICY", "MODE", "MATCH", "RULE", "ATTESTATIONS"].map(String::from)];
        for p in &self.policies.policies {
            let attestations: Vec<&str> = p.attestations.iter().map(|a| a.name.as_str()).collect();
            rows.push([
                p.name.clone(),
                p.mode.to_string(),
                p.patterns.join(", "),
                p.rule.clone(),
                if attestations.is_empty() {
                    "-".into()
                } else {
                    attestations.join(", ")
                },
            ]);
        }
        table(f, &rows)?;
        if !self.policies.exceptions.is_empty() {
            writeln!(f, "\nexceptions")?;
            let mut rows =
                vec![["EXCEPTION", "MATCH", "DIGEST", "EXPIRES", "TICKET"].map(String::from)];
            for e in &self.policies.exceptions {
                rows.push([
                    e.name.clone(),
                    e.pattern.clone(),
                    dash(e.digest.as_deref()),
                    if e.expired {
                        format!("{} (expired)", e.expires)
                    } else {
                        e.expires.clone()
                    },
                    e.ticket.clone(),
                ]);
            }
            table(f, &rows)?;
        }
        if !self.policies.clients.is_empty() {
            writeln!(f, "\nclient scopes")?;
            let mut rows = vec![["IDENTITY", "MAY PULL"].map(String::from)];
            for c in &self.policies.clients {
                rows.push([c.identity.clone(), c.repositories.join(", ")]);
            }
            table(f, &rows)?;
        }
        Ok(())
    }
}

/// Rows in columns two spaces apart, the last column unpadded.
pub(super) fn table<const N: usize>(
    f: &mut fmt::Formatter<'_>,
    rows: &[[String; N]],
) -> fmt::Result {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        writeln!(f, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_prints_tables_and_serializes_policies_before_trust() {
        let report = TrustStatusReport {
            policies: crate::app::PolicyStatus {
                epoch: 3,
                policies: vec![crate::app::PolicyEntry {
                    name: "acme".into(),
                    mode: "enforce",
                    patterns: vec!["docker.io/acme/**".into()],
                    rule: "signatures: any of [acme]".into(),
                    attestations: vec![],
                }],
                exceptions: vec![],
                clients: vec![crate::app::ClientEntry {
                    identity: "team-a".into(),
                    repositories: vec!["docker.io/team-a/**".into()],
                }],
            },
            trust: crate::app::TrustStatus {
                epoch: 3,
                authorities: vec![],
            },
        };
        assert_eq!(
            report.to_string(),
            "trust (epoch 3)\n\
             AUTHORITY  SOURCE  AVAILABLE  TRUSTS  ROOT  LAST VERIFIED  STALE AFTER  EARLIEST EXPIRY  LAST ERROR\n\
             \npolicies (epoch 3)\n\
             POLICY  MODE     MATCH              RULE                       ATTESTATIONS\n\
             acme    enforce  docker.io/acme/**  signatures: any of [acme]  -\n\
             \nclient scopes\n\
             IDENTITY  MAY PULL\n\
             team-a    docker.io/team-a/**\n"
        );
        let json = serde_json::to_string(&report).unwrap_or_default();
        assert!(json.starts_with("{\"policies\":{\"epoch\":3"), "{json}");
        assert_eq!(report.exit(), Exit::Success);
    }
}
