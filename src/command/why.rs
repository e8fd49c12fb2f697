//! `portcullis why IMAGE|DECISION_ID`: the last decision the proxy made
//! for an image (or the one a 403 named), read from the audit log. Nothing
//! is fetched or decided again: this is what the proxy said, and why.

use std::fmt;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::{Exit, Failure, Report, StartError};
use crate::audit::Sink;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::oci::Reference;
use crate::oci::name::{ReferenceError, split_image};
use crate::upstream::{RoutingError, Upstreams};

/// Audit lines longer than this are skipped, not read whole: a decision
/// line is a few hundred bytes.
const MAX_LINE: usize = 64 << 10;

/// What to look for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wanted {
    /// The decision a 403 named.
    Id(String),
    /// The last decision about a repository on an upstream, for one tag or
    /// digest, or for any reference when the image names none.
    Image {
        upstream: String,
        repository: String,
        reference: Option<Reference>,
    },
}

impl Wanted {
    fn matches(&self, line: &serde_json::Value) -> bool {
        if line["event"] != "decision" {
            return false;
        }
        match self {
            Wanted::Id(id) => line["id"] == id.as_str(),
            Wanted::Image {
                upstream,
                repository,
                reference,
            } => {
                line["upstream"] == upstream.as_str()
                    && line["repository"] == repository.as_str()
                    && match reference {
                        None => true,
                        Some(Reference::Tag(t)) => line["reference"] == t.as_str(),
                        Some(Reference::Digest(d)) => {
                            let d = d.to_string();
                            line["digest"] == d.as_str() || line["reference"] == d.as_str()
                        }
                    }
            }
        }
    }
}

/// Finds the last decision for `subject` (an image, or a decision id) in
/// the audit log: `audit` if given, else the file the config at `config`
/// writes to.
pub fn why(subject: &str, config: &Path, audit: Option<&Path>) -> Result<WhyReport, WhyError> {
    let config = Config::load(config).map_err(StartError::from)?;
    let wanted = wanted(subject, &config)?;
    let file = match (audit, &config.audit.sink) {
        (Some(f), _) => f.to_path_buf(),
        (None, Sink::File(f)) => f.clone(),
        (None, Sink::Stdout) => return Err(WhyError::AuditOnStdout),
    };
    let opened = std::fs::File::open(&file).map_err(|source| WhyError::Read {
        file: file.clone(),
        source,
    })?;
    let mut last = None;
    let mut count = 0u64;
    let mut reader = std::io::BufReader::new(opened);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| WhyError::Read {
                file: file.clone(),
                source,
            })?;
        if n == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') {
            // Too long (skip to its end) or the last line still being written.
            if n > MAX_LINE {
                skip_line(&mut reader);
            }
            continue;
        }
        let Ok(line) = serde_json::from_slice::<serde_json::Value>(&buf) else {
            continue;
        };
        if wanted.matches(&line) {
            count += 1;
            last = Some(line);
        }
    }
    Ok(WhyReport {
        subject: subject.to_string(),
        decisions: count,
        last: last.map(Found::from),
    })
}

fn skip_line(reader: &mut impl BufRead) {
    loop {
        let Ok(chunk) = reader.fill_buf() else { return };
        if chunk.is_empty() {
            return;
        }
        match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return;
            }
            None => {
                let n = chunk.len();
                reader.consume(n);
            }
        }
    }
}

fn wanted(subject: &str, config: &Config) -> Result<Wanted, WhyError> {
    if subject.len() == 16 && subject.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Wanted::Id(subject.to_ascii_lowercase()));
    }
    let names_reference = subject.contains('@')
        || subject
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'));
    let (name, reference) = split_image(subject).map_err(|source| WhyError::Image {
        image: subject.to_string(),
        source,
    })?;
    // Routing builds upstream clients but dials nothing.
    let metrics = Arc::new(Metrics::new().map_err(|e| WhyError::Setup(e.to_string()))?);
    let upstreams = Upstreams::build(
        &config.upstreams,
        config.server.default_upstream.as_ref(),
        &metrics,
    )
    .map_err(|e| WhyError::Setup(e.to_string()))?;
    let routed = upstreams
        .route(name, None)
        .map_err(|source| WhyError::Route {
            name: name.to_string(),
            source,
        })?;
    Ok(Wanted::Image {
        upstream: routed.upstream.name.to_string(),
        repository: routed.repo.to_string(),
        reference: names_reference.then_some(reference),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum WhyError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{image}: {source}")]
    Image {
        image: String,
        source: ReferenceError,
    },
    #[error("{name}: {source}")]
    Route { name: String, source: RoutingError },
    #[error("cannot read the audit log {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the audit log goes to stdout in this config: give the file it was collected in with --audit FILE"
    )]
    AuditOnStdout,
    #[error("{0}")]
    Setup(String),
}

impl Failure for WhyError {
    fn exit(&self) -> Exit {
        Exit::NoDecision
    }
}

/// The last decision found, as the audit line has it.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub id: Option<String>,
    pub time: Option<String>,
    pub image: String,
    pub digest: Option<String>,
    pub decision: String,
    pub reason: String,
    pub policy: String,
    pub message: Option<String>,
    pub authorities: Vec<String>,
    pub exception: Option<String>,
    pub client: Option<String>,
    pub trust_epoch: Option<u64>,
}

impl From<serde_json::Value> for Found {
    fn from(v: serde_json::Value) -> Found {
        let s = |k: &str| v[k].as_str().map(str::to_string);
        let image = format!(
            "{}/{}{}{}",
            s("upstream").unwrap_or_default(),
            s("repository").unwrap_or_default(),
            if s("reference").is_some_and(|r| r.starts_with("sha256:")) {
                "@"
            } else {
                ":"
            },
            s("reference").unwrap_or_default()
        );
        Found {
            id: s("id"),
            time: s("time"),
            image,
            digest: s("digest"),
            decision: s("decision").unwrap_or_default(),
            reason: s("reason").unwrap_or_default(),
            policy: s("policy").unwrap_or_default(),
            message: s("message"),
            authorities: v["authorities"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            exception: s("exception"),
            client: s("client"),
            trust_epoch: v["trust_epoch"].as_u64(),
        }
    }
}

/// The answer: how many decisions matched and the last of them.
#[derive(Debug, Clone, Serialize)]
pub struct WhyReport {
    pub subject: String,
    pub decisions: u64,
    pub last: Option<Found>,
}

impl Report for WhyReport {
    /// 0 when a decision was found, 2 when the log holds none.
    fn exit(&self) -> Exit {
        match self.last {
            Some(_) => Exit::Success,
            None => Exit::NoDecision,
        }
    }

    fn diagnostic(&self) -> Option<String> {
        self.last
            .is_none()
            .then(|| format!("no decision for {} in the audit log", self.subject))
    }
}

impl fmt::Display for WhyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(d) = &self.last else { return Ok(()) };
        writeln!(f, "{}: {}", d.image, d.decision)?;
        let mut row = |k: &str, v: Option<&str>| match v {
            Some(v) if !v.is_empty() => writeln!(f, "  {k:<11} {v}"),
            _ => Ok(()),
        };
        row("reason", Some(&d.reason))?;
        row("policy", Some(&d.policy))?;
        row("message", d.message.as_deref())?;
        row("digest", d.digest.as_deref())?;
        row("exception", d.exception.as_deref())?;
        row("authorities", Some(&d.authorities.join(", ")))?;
        row("decision", d.id.as_deref())?;
        row("time", d.time.as_deref())?;
        row("client", d.client.as_deref())?;
        let epoch = d.trust_epoch.map(|e| e.to_string());
        row("trust epoch", epoch.as_deref())?;
        if self.decisions > 1 {
            writeln!(
                f,
                "  ({} decisions matched; this is the last)",
                self.decisions
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, reference: &str, digest: &str, decision: &str) -> serde_json::Value {
        serde_json::json!({"event": "decision", "id": id, "upstream": "local",
            "repository": "team/app", "reference": reference, "digest": digest,
            "decision": decision})
    }

    #[test]
    fn an_image_matches_by_upstream_repository_and_tag_or_digest() {
        let tag: Reference = Reference::Tag("v1".parse().unwrap_or_else(|_| unreachable!()));
        let want = |reference| Wanted::Image {
            upstream: "local".into(),
            repository: "team/app".into(),
            reference,
        };
        let l = line("a", "v1", "sha256:ab", "deny");
        assert!(want(Some(tag.clone())).matches(&l));
        assert!(want(None).matches(&l));
        assert!(
            !want(Some(Reference::Tag(
                "v2".parse().unwrap_or_else(|_| unreachable!())
            )))
            .matches(&l)
        );
        let other = serde_json::json!({"event": "decision", "upstream": "local", "repository": "team/other", "reference": "v1"});
        assert!(!want(Some(tag)).matches(&other));
        let change = serde_json::json!({"event": "trust_change", "upstream": "local", "repository": "team/app"});
        assert!(!want(None).matches(&change));
        assert!(Wanted::Id("a".into()).matches(&l));
        assert!(!Wanted::Id("b".into()).matches(&l));
    }
}
