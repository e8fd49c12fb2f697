//! What `/admin/trust`, `/admin/policies` and `portcullis trust status`
//! report: trust per authority and the policies and exceptions in force.
//! Times are RFC 3339 (seconds), durations humantime (`1h 30m`).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::App;
use crate::config::{AuthorityConfig, AuthorityKind, Pem, TrustedRootSource};
use crate::trust::source::LastError;
use crate::trust::{Authority, Fetched};

/// Trust per authority, with the epoch of the gate in force.
#[derive(Debug, Serialize)]
pub struct TrustStatus {
    pub epoch: u64,
    pub authorities: Vec<AuthorityStatus>,
}

#[derive(Debug, Serialize)]
pub struct AuthorityStatus {
    pub name: String,
    pub source: SourceStatus,
    /// What the authority trusts now (key and certificate fingerprints).
    pub fingerprints: Vec<String>,
    pub revoked: Vec<String>,
    pub revoked_serials: Vec<String>,
    pub trusted_root: Option<RootStatus>,
    /// When a URL source's document was last verified.
    pub last_verified: Option<String>,
    /// A signed document's version and expiry.
    pub document: Option<DocumentStatus>,
    pub last_error: Option<ErrorStatus>,
    /// When its material stops being relied on unless refreshed.
    pub stale_after: Option<String>,
    pub earliest_expiry: Option<String>,
    /// `true`, or why decisions needing it deny `trust_unavailable`.
    pub available: Option<Availability>,
}

/// Where an authority's material comes from.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum SourceStatus {
    Files {
        files: Vec<String>,
    },
    /// Always `"keyless"`.
    Keyless(&'static str),
    Url {
        url: String,
        refresh: String,
        max_stale: String,
        signed_by: Option<PathBuf>,
    },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RootStatus {
    /// `"sigstore-public-good (embedded)"`.
    Embedded(&'static str),
    File {
        file: PathBuf,
    },
    Tuf {
        tuf: String,
        last_verified: Option<String>,
        last_error: Option<ErrorStatus>,
        max_stale: String,
    },
}

#[derive(Debug, Serialize)]
pub struct DocumentStatus {
    pub version: u64,
    pub expires: String,
}

#[derive(Debug, Serialize)]
pub struct ErrorStatus {
    pub at: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Availability {
    /// Always `true`.
    Available(bool),
    Unavailable(String),
}

/// Policies and exceptions in force, with the epoch of the gate in force.
#[derive(Debug, Serialize)]
pub struct PolicyStatus {
    pub epoch: u64,
    pub policies: Vec<PolicyEntry>,
    pub exceptions: Vec<ExceptionEntry>,
    /// `[[client]]` scopes: identity → the repositories it may pull.
    pub clients: Vec<ClientEntry>,
}

#[derive(Debug, Serialize)]
pub struct ClientEntry {
    pub identity: String,
    pub repositories: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PolicyEntry {
    pub name: String,
    pub mode: &'static str,
    #[serde(rename = "match")]
    pub patterns: Vec<String>,
    pub rule: String,
    pub attestations: Vec<AttestationEntry>,
}

#[derive(Debug, Serialize)]
pub struct AttestationEntry {
    pub name: String,
    pub predicate_type: String,
    pub authorities: Vec<String>,
    pub condition: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ExceptionEntry {
    pub name: String,
    #[serde(rename = "match")]
    pub pattern: String,
    pub digest: Option<String>,
    pub expires: String,
    pub expired: bool,
    pub ticket: String,
    pub reason: String,
}

fn rfc(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn error_status(e: LastError) -> ErrorStatus {
    ErrorStatus {
        at: rfc(e.at),
        error: e.error,
    }
}

fn source_status(a: &AuthorityConfig) -> SourceStatus {
    match &a.kind {
        AuthorityKind::Keys(p) | AuthorityKind::CaRoots(p) => SourceStatus::Files {
            files: p.iter().map(Pem::label).collect(),
        },
        AuthorityKind::Keyless { .. } => SourceStatus::Keyless("keyless"),
        AuthorityKind::Source(s) => SourceStatus::Url {
            url: s.url.to_string(),
            refresh: human(s.refresh),
            max_stale: human(s.max_stale),
            signed_by: s.signed_by.clone(),
        },
    }
}

impl App {
    /// Current trust per authority: where it comes from, what it trusts,
    /// when it was last refreshed, whether it can be relied on now.
    pub fn trust_status(&self) -> TrustStatus {
        let config = self.config();
        let (gate, epoch) = self.puller.gate();
        let fetched = self.sources.snapshot();
        let now = self.clock.now();
        let authorities = config
            .authorities
            .iter()
            .map(|a| {
                let loaded = gate.trust().authority(&a.name).map(|l| &**l);
                self.authority_status(a, loaded, fetched.get(&a.name), &fetched, now)
            })
            .collect();
        TrustStatus { epoch, authorities }
    }

    fn authority_status(
        &self,
        a: &AuthorityConfig,
        loaded: Option<&Authority>,
        fetched: Option<&Fetched>,
        all_fetched: &std::collections::HashMap<String, Fetched>,
        now: SystemTime,
    ) -> AuthorityStatus {
        let trusted_root = a.trusted_root.as_ref().map(|r| match r {
            TrustedRootSource::PublicGood => {
                RootStatus::Embedded("sigstore-public-good (embedded)")
            }
            TrustedRootSource::File(p) => RootStatus::File { file: p.clone() },
            TrustedRootSource::Tuf(t) => RootStatus::Tuf {
                tuf: t.url.to_string(),
                last_verified: all_fetched.get(&t.key()).map(|f| rfc(f.verified.at())),
                last_error: self.sources.last_error(&t.key()).map(error_status),
                max_stale: human(t.max_stale),
            },
        });
        AuthorityStatus {
            name: a.name.clone(),
            source: source_status(a),
            fingerprints: loaded.map(|l| l.fingerprints()).unwrap_or_default(),
            revoked: a.revoked.clone(),
            revoked_serials: a.revoked_serials.clone(),
            trusted_root,
            last_verified: fetched.map(|f| rfc(f.verified.at())),
            document: fetched.and_then(|f| f.header).map(|h| DocumentStatus {
                version: h.version,
                expires: rfc(h.expires),
            }),
            last_error: self.sources.last_error(&a.name).map(error_status),
            stale_after: loaded.and_then(|l| l.fresh_until()).map(rfc),
            earliest_expiry: loaded.and_then(|l| l.earliest_expiry()).map(rfc),
            available: loaded.map(|l| match l.availability(now) {
                Ok(()) => Availability::Available(true),
                Err(e) => Availability::Unavailable(e.to_string()),
            }),
        }
    }

    /// Policies in force, and exceptions with their expiry.
    pub fn policy_status(&self) -> PolicyStatus {
        let (gate, epoch) = self.puller.gate();
        let now = self.clock.now();
        let policies = gate
            .policies()
            .iter()
            .map(|p| PolicyEntry {
                name: p.name.clone(),
                mode: p.mode.as_str(),
                patterns: p.patterns.iter().map(|g| g.to_string()).collect(),
                rule: p.rule.to_string(),
                attestations: p
                    .attestations
                    .iter()
                    .map(|a| AttestationEntry {
                        name: a.name.clone(),
                        predicate_type: a.predicate_type.clone(),
                        authorities: a.authorities.clone(),
                        condition: a.condition.as_ref().map(|c| c.name.clone()),
                    })
                    .collect(),
            })
            .collect();
        let exceptions = gate
            .policies()
            .exceptions()
            .iter()
            .map(|e| ExceptionEntry {
                name: e.name.clone(),
                pattern: e.pattern.to_string(),
                digest: e.digest.as_ref().map(|d| d.to_string()),
                expires: rfc(e.expires),
                expired: now >= e.expires,
                ticket: e.ticket.clone(),
                reason: e.reason.clone(),
            })
            .collect();
        let clients = gate
            .policies()
            .clients()
            .iter()
            .map(|c| ClientEntry {
                identity: c.identity.clone(),
                repositories: c.repositories.iter().map(|g| g.to_string()).collect(),
            })
            .collect();
        PolicyStatus {
            epoch,
            policies,
            exceptions,
            clients,
        }
    }
}
