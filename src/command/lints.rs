//! What `check-config` warns about: legal, but dangerous or dead. A policy
//! no repository can reach (shadowed by an earlier one, or naming an
//! upstream nobody configured, so its repositories fall through to a later
//! catch-all), an exception that can never apply or already expired, an
//! authority no policy uses, a client scope naming no upstream.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::Config;
use crate::policy::{Glob, Rule};

/// One warning, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lint {
    pub path: String,
    pub message: String,
}

/// Every warning for `config` at `now`, in file order.
pub fn lints(config: &Config, now: SystemTime) -> Vec<Lint> {
    let upstreams: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
    let mut found = Vec::new();
    let policies: Vec<_> = config.policies.iter().collect();
    for (i, p) in policies.iter().enumerate() {
        let path = format!("policy[{i}]");
        let mut reachable = false;
        for g in &p.patterns {
            if !names_an_upstream(g, &upstreams) {
                found.push(Lint {
                    path: format!("{path}.match"),
                    message: format!(
                        "\"{}\" names no configured upstream ({}): the repositories meant fall through to a later policy",
                        g.as_str(),
                        upstreams.join(", ")
                    ),
                });
                continue;
            }
            match policies[..i]
                .iter()
                .find(|earlier| earlier.patterns.iter().any(|e| covers(e, g)))
            {
                Some(earlier) => found.push(Lint {
                    path: format!("{path}.match"),
                    message: format!(
                        "\"{}\" is shadowed by policy \"{}\" before it: policies match in file order",
                        g.as_str(),
                        earlier.name
                    ),
                }),
                None => reachable = true,
            }
        }
        if !reachable && !p.patterns.is_empty() {
            found.push(Lint {
                path,
                message: format!("policy \"{}\" can never apply", p.name),
            });
        }
    }
    for (i, e) in config.policies.exceptions().iter().enumerate() {
        let path = format!("exception[{i}]");
        if !names_an_upstream(&e.pattern, &upstreams) {
            found.push(Lint {
                path: format!("{path}.match"),
                message: format!(
                    "\"{}\" names no configured upstream: exception \"{}\" can never apply",
                    e.pattern.as_str(),
                    e.name
                ),
            });
        }
        if e.expires <= now {
            found.push(Lint {
                path: format!("{path}.expires"),
                message: format!(
                    "exception \"{}\" expired {}: it admits nothing; remove it",
                    e.name,
                    humantime::format_rfc3339_seconds(e.expires)
                ),
            });
        }
    }
    for (i, c) in config.policies.clients().iter().enumerate() {
        for (j, g) in c.repositories.iter().enumerate() {
            if !names_an_upstream(g, &upstreams) {
                found.push(Lint {
                    path: format!("client[{i}].repositories[{j}]"),
                    message: format!(
                        "\"{}\" names no configured upstream ({}): identity \"{}\" may pull nothing through it",
                        g.as_str(),
                        upstreams.join(", "),
                        c.identity
                    ),
                });
            }
        }
    }
    let used: BTreeSet<&str> = config
        .policies
        .iter()
        .flat_map(|p| {
            let signers = match &p.rule {
                Rule::Signatures { authorities, .. } => authorities.as_slice(),
                Rule::Deny | Rule::AllowUnverified => &[],
            };
            signers
                .iter()
                .chain(p.attestations.iter().flat_map(|a| &a.authorities))
                .map(String::as_str)
        })
        .collect();
    for (i, a) in config.authorities.iter().enumerate() {
        if !used.contains(a.name.as_str()) {
            found.push(Lint {
                path: format!("authority[{i}]"),
                message: format!("authority \"{}\" is named by no policy", a.name),
            });
        }
    }
    found
}

/// Whether the pattern's first segment can be a configured upstream name.
fn names_an_upstream(g: &Glob, upstreams: &[&str]) -> bool {
    let first = g.as_str().split('/').next().unwrap_or("");
    if first == "**" {
        return true;
    }
    match first.parse::<Glob>() {
        Ok(one) => upstreams.iter().any(|u| one.matches(u)),
        Err(_) => true,
    }
}

/// Whether every path `later` matches is matched by `earlier`: the same
/// pattern, or `earlier` is literal segments then a final `**` that
/// `later`'s own literal segments start with. (Other overlaps are not
/// claimed: a warning must be true.)
fn covers(earlier: &Glob, later: &Glob) -> bool {
    if earlier.as_str() == later.as_str() {
        return true;
    }
    let e: Vec<&str> = earlier.as_str().split('/').collect();
    let Some((last, prefix)) = e.split_last() else {
        return false;
    };
    if *last != "**" || prefix.iter().any(|s| s.contains(['*', '?', '['])) {
        return false;
    }
    let l: Vec<&str> = later.as_str().split('/').collect();
    l.len() > prefix.len() && l.iter().zip(prefix).all(|(a, b)| a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> Glob {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_catch_all_or_a_literal_prefix_covers_what_starts_with_it_and_nothing_else() {
        assert!(covers(&g("**"), &g("docker.io/acme/**")));
        assert!(covers(&g("docker.io/**"), &g("docker.io/acme/app")));
        assert!(covers(&g("docker.io/acme/app"), &g("docker.io/acme/app")));
        assert!(!covers(&g("docker.io/acme/**"), &g("docker.io/**")));
        assert!(!covers(&g("docker.io/*/app"), &g("docker.io/acme/app")));
        assert!(!covers(&g("ghcr.io/**"), &g("docker.io/acme/**")));
        assert!(!covers(&g("docker.io/acme"), &g("docker.io/acme/app")));
    }

    #[test]
    fn a_pattern_names_an_upstream_by_its_first_segment_or_a_wildcard_that_matches_one() {
        let ups = ["docker.io", "ghcr.io"];
        assert!(names_an_upstream(&g("docker.io/acme/**"), &ups));
        assert!(names_an_upstream(&g("**"), &ups));
        assert!(names_an_upstream(&g("*/acme/**"), &ups));
        assert!(!names_an_upstream(&g("dockr.io/acme/**"), &ups));
        assert!(!names_an_upstream(&g("quay.io/**"), &ups));
    }
}
