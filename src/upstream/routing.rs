//! Which upstream a repository name goes to: by `ns`, else by a leading
//! path segment naming an upstream (its name, URL host, or one of Docker
//! Hub's names), else the default upstream. Names are looked up among the
//! configured upstreams only; nothing a client sends becomes a host.

use std::collections::HashMap;
use std::sync::Arc;

use super::{BuildError, Upstream};
use crate::config::UpstreamConfig;
use crate::metrics::Metrics;
use crate::oci::{RepositoryName, UpstreamName};

const DOCKER_HUB_NAMES: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// The configured upstreams, by name and by alias, and the default one.
pub struct Upstreams {
    by_name: HashMap<String, Arc<Upstream>>,
    default: Option<Arc<Upstream>>,
}

impl Upstreams {
    /// One client per configured upstream. Aliases (URL host, host:port,
    /// Docker Hub's names) never shadow a configured name.
    pub fn build(
        configs: &[UpstreamConfig],
        default: Option<&UpstreamName>,
        metrics: &Arc<Metrics>,
    ) -> Result<Upstreams, BuildError> {
        let mut by_name = HashMap::new();
        let mut aliases = Vec::new();
        for u in configs {
            let client = Arc::new(Upstream::new(u, Arc::clone(metrics))?);
            if let Some(host) = u.url.host_str() {
                aliases.push((host.to_string(), Arc::clone(&client)));
                if let Some(port) = u.url.port() {
                    aliases.push((format!("{host}:{port}"), Arc::clone(&client)));
                }
            }
            if DOCKER_HUB_NAMES.contains(&u.name.as_str()) {
                for alias in DOCKER_HUB_NAMES {
                    aliases.push((alias.to_string(), Arc::clone(&client)));
                }
            }
            by_name.insert(u.name.to_string(), client);
        }
        for (alias, client) in aliases {
            by_name.entry(alias).or_insert(client);
        }
        let default = default.and_then(|n| by_name.get(n.as_str()).cloned());
        Ok(Upstreams { by_name, default })
    }

    /// Records each upstream's credential loads in `audit`.
    pub fn attach_audit(&self, audit: &Arc<crate::audit::Audit>) {
        for u in self.by_name.values() {
            u.attach_audit(audit);
        }
    }

    /// The upstream configured under `name` (or an alias of it), if any.
    pub fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        self.by_name.get(&name.to_ascii_lowercase()).cloned()
    }

    /// Where `name` (with the request's `ns`, if any) is pulled from.
    pub fn route(
        &self,
        name: &str,
        ns: Option<&str>,
    ) -> Result<Routed<Arc<Upstream>>, RoutingError> {
        route(
            name,
            ns,
            |n| self.get(n),
            self.default.as_ref(),
            |u| u.library_prefix,
        )
    }
}

/// Where a repository name goes: which upstream, and the name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed<U> {
    pub upstream: U,
    pub repo: RepositoryName,
    /// The `ns` value that selected the upstream, echoed as `OCI-Namespace`.
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    #[error("unknown registry namespace")]
    UnknownNamespace,
    #[error("no upstream for this repository")]
    NoUpstream,
    #[error("a registry that is not a configured upstream")]
    UnknownRegistry,
    #[error("invalid repository name")]
    InvalidName,
}

/// Whether a reference's first component is a registry host, as Docker
/// reads references: it holds a `.` or a `:`, or is `localhost`.
fn names_a_registry(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost"
}

/// Chooses the upstream for `name`: by `ns`, else by a leading path segment
/// naming an upstream, else the default upstream. `lookup` maps a name or
/// alias to a configured upstream and never invents one.
pub fn route<U: Clone>(
    name: &str,
    ns: Option<&str>,
    lookup: impl Fn(&str) -> Option<U>,
    default: Option<&U>,
    library_prefix: impl Fn(&U) -> bool,
) -> Result<Routed<U>, RoutingError> {
    let (first, remainder) = match name.split_once('/') {
        Some((f, r)) => (f, Some(r)),
        None => (name, None),
    };
    let (upstream, repo_path, namespace) = match ns {
        Some(ns) => {
            let u = lookup(ns).ok_or(RoutingError::UnknownNamespace)?;
            let strip =
                remainder.is_some() && lookup(first).is_some() && first.eq_ignore_ascii_case(ns);
            let path = if strip {
                remainder.unwrap_or(name)
            } else {
                name
            };
            (u, path, Some(ns.to_string()))
        }
        None => match (lookup(first), remainder) {
            (Some(u), Some(rest)) => (u, rest, None),
            // A registry host nobody configured (a typo, or a registry
            // Portcullis does not proxy) is refused, not taken as a
            // repository on the default upstream: Docker Hub names never
            // start with a host.
            (None, Some(_)) if names_a_registry(first) => {
                return Err(RoutingError::UnknownRegistry);
            }
            _ => (
                default.cloned().ok_or(RoutingError::NoUpstream)?,
                name,
                None,
            ),
        },
    };
    let mut repo: RepositoryName = repo_path.parse().map_err(|_| RoutingError::InvalidName)?;
    if library_prefix(&upstream) && !repo_path.contains('/') {
        repo = repo
            .prefixed("library")
            .map_err(|_| RoutingError::InvalidName)?;
    }
    Ok(Routed {
        upstream,
        repo,
        namespace,
    })
}

#[cfg(test)]
mod tests;
