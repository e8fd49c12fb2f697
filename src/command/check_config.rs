//! `portcullis check-config FILE`: validate a config file, its trust
//! material included, and summarise it.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::{Exit, Failure, Report};
use crate::config::{AuthorityKind, Config, ConfigError, Problem};
use crate::policy::{Mode, Rule};
use crate::trust::TrustSnapshot;

/// Loads and checks `file`: every problem at once (the config's, and the
/// trust material of each authority that is itself valid, with the
/// warnings of a config that is), or a summary.
pub fn check_config(file: &Path) -> Result<CheckConfigReport, CheckConfigError> {
    let invalid = |problems, warnings| CheckConfigError {
        file: file.to_path_buf(),
        problems,
        warnings,
    };
    let config = match Config::load(file) {
        Ok(config) => config,
        Err(ConfigError {
            mut problems,
            authorities,
            ..
        }) => {
            for (i, a) in &authorities {
                problems.extend(trust_problems(*i, a));
            }
            return Err(invalid(problems, Vec::new()));
        }
    };
    let warnings = super::lints::lints(&config, std::time::SystemTime::now());
    if let Err(problems) = TrustSnapshot::load(&config.authorities, 0) {
        return Err(invalid(problems, warnings));
    }
    let mut report = CheckConfigReport::new(file, &config);
    report.warnings = warnings;
    Ok(report)
}

/// The problems in one authority's trust material, named by its index
/// in the file.
fn trust_problems(i: usize, a: &crate::config::AuthorityConfig) -> Vec<Problem> {
    let Err(problems) = TrustSnapshot::load(std::slice::from_ref(a), 0) else {
        return Vec::new();
    };
    let alone = "authority[0]";
    problems
        .into_iter()
        .map(|p| Problem {
            path: match p.path.strip_prefix(alone) {
                Some(rest) => format!("authority[{i}]{rest}"),
                None => p.path,
            },
            message: p.message,
        })
        .collect()
}

/// An invalid config: every problem found, and the warnings about what
/// is valid in it.
#[derive(Debug, thiserror::Error)]
pub struct CheckConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
    pub warnings: Vec<super::lints::Lint>,
}

impl fmt::Display for CheckConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{} has {n} problem(s):", self.file.display())?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        for w in &self.warnings {
            write!(f, "\n  warning {}: {}", w.path, w.message)?;
        }
        Ok(())
    }
}

impl Failure for CheckConfigError {
    fn exit(&self) -> Exit {
        Exit::Failure
    }
}

/// A valid config, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct CheckConfigReport {
    pub file: PathBuf,
    pub listen: SocketAddr,
    /// The admin listener, when there is one.
    pub admin: Option<SocketAddr>,
    pub cache: CacheSummary,
    pub upstreams: Vec<UpstreamSummary>,
    pub authorities: Vec<AuthoritySummary>,
    pub policies: Vec<PolicySummary>,
    /// Legal but dangerous or dead (the config is still valid).
    pub warnings: Vec<super::lints::Lint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheSummary {
    pub dir: PathBuf,
    pub max_bytes: u64,
    #[serde(serialize_with = "human_duration")]
    pub tag_ttl: Duration,
    #[serde(serialize_with = "human_duration")]
    pub max_stale: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpstreamSummary {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuthoritySummary {
    pub name: String,
    /// `keys`, `ca_roots`, `keyless` or `source`.
    #[serde(serialize_with = "kind_name")]
    pub kind: AuthorityKind,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicySummary {
    pub name: String,
    pub patterns: Vec<String>,
    /// As `GET /admin/policies` shows it.
    #[serde(serialize_with = "rule_text")]
    pub rule: Rule,
    #[serde(serialize_with = "mode_name")]
    pub mode: Mode,
}

impl CheckConfigReport {
    pub fn new(file: &Path, c: &Config) -> CheckConfigReport {
        CheckConfigReport {
            file: file.to_path_buf(),
            listen: c.server.listen,
            admin: c.admin.as_ref().map(|a| a.listen),
            cache: CacheSummary {
                dir: c.cache.dir.clone(),
                max_bytes: c.cache.max_bytes,
                tag_ttl: c.cache.tag_ttl,
                max_stale: c.cache.max_stale,
            },
            upstreams: c
                .upstreams
                .iter()
                .map(|u| UpstreamSummary {
                    name: u.name.to_string(),
                    url: u.url.to_string(),
                })
                .collect(),
            authorities: c
                .authorities
                .iter()
                .map(|a| AuthoritySummary {
                    name: a.name.clone(),
                    kind: a.kind.clone(),
                })
                .collect(),
            policies: c
                .policies
                .iter()
                .map(|p| PolicySummary {
                    name: p.name.clone(),
                    patterns: p.patterns.iter().map(|g| g.as_str().to_string()).collect(),
                    rule: p.rule.clone(),
                    mode: p.mode,
                })
                .collect(),
            warnings: Vec::new(),
        }
    }
}

impl Report for CheckConfigReport {
    fn exit(&self) -> Exit {
        Exit::Success
    }
}

impl fmt::Display for CheckConfigReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: ok", self.file.display())?;
        let admin = self.admin.map_or("off".into(), |a| a.to_string());
        writeln!(f, "  listen {} (admin {admin})", self.listen)?;
        let c = &self.cache;
        writeln!(
            f,
            "  cache {} (max {} bytes, tag_ttl {}, max_stale {})",
            c.dir.display(),
            c.max_bytes,
            humantime::format_duration(c.tag_ttl),
            humantime::format_duration(c.max_stale)
        )?;
        for u in &self.upstreams {
            writeln!(f, "  upstream {} -> {}", u.name, u.url)?;
        }
        for a in &self.authorities {
            writeln!(f, "  authority {} {}", a.name, kind_text(&a.kind))?;
        }
        for p in &self.policies {
            let globs = p.patterns.join(", ");
            let mode = p.mode.as_str();
            writeln!(f, "  policy {} [{globs}] {} ({mode})", p.name, p.rule)?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning {}: {}", w.path, w.message)?;
        }
        Ok(())
    }
}

fn human_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

fn kind_name<S: serde::Serializer>(kind: &AuthorityKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match kind {
        AuthorityKind::Keys(_) => "keys",
        AuthorityKind::CaRoots(_) => "ca_roots",
        AuthorityKind::Keyless { .. } => "keyless",
        AuthorityKind::Source(_) => "source",
    })
}

fn rule_text<S: serde::Serializer>(rule: &Rule, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(rule)
}

/// An authority's kind and what it trusts, as people read it.
fn kind_text(kind: &AuthorityKind) -> String {
    let files = |pems: &[crate::config::Pem]| {
        pems.iter()
            .map(crate::config::Pem::label)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match kind {
        AuthorityKind::Keys(p) => format!("keys ({})", files(p)),
        AuthorityKind::CaRoots(p) => format!("ca_roots ({})", files(p)),
        AuthorityKind::Keyless { issuer, subject } => {
            format!("keyless (issuer {issuer}, subject {subject})")
        }
        AuthorityKind::Source(s) => format!("source ({})", s.url),
    }
}

fn mode_name<S: serde::Serializer>(mode: &Mode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(mode.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::material::SubjectMatch;

    fn report(admin: Option<SocketAddr>) -> CheckConfigReport {
        CheckConfigReport {
            file: PathBuf::from("portcullis.toml"),
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            admin,
            cache: CacheSummary {
                dir: PathBuf::from("/var/tmp/portcullis"),
                max_bytes: 1024,
                tag_ttl: Duration::from_secs(60),
                max_stale: Duration::from_secs(86400),
            },
            upstreams: vec![UpstreamSummary {
                name: "docker.io".into(),
                url: "https://registry-1.docker.io/".into(),
            }],
            authorities: vec![AuthoritySummary {
                name: "k8s".into(),
                kind: AuthorityKind::Keyless {
                    issuer: "https://accounts.google.com".into(),
                    subject: SubjectMatch::Exact("krel@example.com".into()),
                },
            }],
            policies: vec![PolicySummary {
                name: "everything".into(),
                patterns: vec!["docker.io/**".into(), "**".into()],
                rule: Rule::AllowUnverified,
                mode: Mode::Audit,
            }],
            warnings: Vec::new(),
        }
    }

    #[test]
    fn the_summary_prints_one_line_per_listener_cache_upstream_authority_and_policy() {
        let admin = SocketAddr::from(([127, 0, 0, 1], 9090));
        assert_eq!(
            report(Some(admin)).to_string(),
            "portcullis.toml: ok\n\
             \x20 listen 127.0.0.1:5000 (admin 127.0.0.1:9090)\n\
             \x20 cache /var/tmp/portcullis (max 1024 bytes, tag_ttl 1m, max_stale 1day)\n\
             \x20 upstream docker.io -> https://registry-1.docker.io/\n\
             \x20 authority k8s keyless (issuer https://accounts.google.com, subject krel@example.com)\n\
             \x20 policy everything [docker.io/**, **] allow_unverified (audit)\n"
        );
        assert_eq!(report(Some(admin)).exit(), Exit::Success);
    }

    #[test]
    fn a_config_without_an_admin_listener_says_admin_off() {
        let text = report(None).to_string();
        assert!(
            text.contains("\n  listen 127.0.0.1:5000 (admin off)\n"),
            "{text}"
        );
    }

    #[test]
    fn the_summary_serializes_with_snake_case_fields_and_readable_values() {
        let json = serde_json::to_value(report(None)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "file": "portcullis.toml",
                "listen": "127.0.0.1:5000",
                "admin": null,
                "cache": {
                    "dir": "/var/tmp/portcullis",
                    "max_bytes": 1024,
                    "tag_ttl": "1m",
                    "max_stale": "1day",
                },
                "upstreams": [{"name": "docker.io", "url": "https://registry-1.docker.io/"}],
                "authorities": [{"name": "k8s", "kind": "keyless"}],
                "policies": [{
                    "name": "everything",
                    "patterns": ["docker.io/**", "**"],
                    "rule": "allow_unverified",
                    "mode": "audit",
                }],
                "warnings": [],
            })
        );
    }
}
