//! `portcullis nodes generate` and `portcullis nodes check`: make
//! Portcullis a node's only route to the registries it proxies, and find
//! node configuration that would bypass it.
//!
//! A runtime falls back to the real registry when a *mirror* answers with
//! an error, a denial included. So Portcullis must be containerd's `server`
//! (with `_default` covering every registry not listed) and CRI-O/podman's
//! `location`, never a mirror in front of the origin; Docker's
//! `registry-mirrors` always falls back and needs egress blocked.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Exit, Failure, Report, StartError};
use crate::config::{Config, UpstreamConfig};

const DOCKER_HUB_NAMES: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// Where the runtimes reach Portcullis: `https://host:port` (or `http://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    scheme: String,
    authority: String,
}

impl Address {
    pub fn parse(s: &str) -> Result<Address, NodesError> {
        let url = reqwest::Url::parse(s).map_err(|_| NodesError::Address(s.to_string()))?;
        let host = url
            .host_str()
            .filter(|_| matches!(url.scheme(), "http" | "https"))
            .filter(|_| url.path() == "/" && url.query().is_none())
            .ok_or_else(|| NodesError::Address(s.to_string()))?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Address {
            scheme: url.scheme().to_string(),
            authority: authority.to_ascii_lowercase(),
        })
    }

    fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// Whether a `server` or `[host]` value in a `hosts.toml` names this
    /// address (containerd takes a value without a scheme as https).
    fn is(&self, value: &str) -> bool {
        let v = value.trim().trim_end_matches('/').to_ascii_lowercase();
        let (scheme, rest) = v.split_once("://").unwrap_or(("https", &v));
        scheme == self.scheme && rest == self.authority
    }
}

/// The registry names a node may write in an image reference for each
/// upstream: its name, its URL's host (and host:port), Docker Hub's names.
fn registry_names(upstreams: &[UpstreamConfig]) -> Vec<(String, String)> {
    let mut seen = BTreeSet::new();
    let mut names = Vec::new();
    for u in upstreams {
        let mut own = vec![u.name.to_string()];
        if let Some(host) = u.url.host_str() {
            own.push(match u.url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_string(),
            });
        }
        if DOCKER_HUB_NAMES.contains(&u.name.as_str()) {
            own.extend(DOCKER_HUB_NAMES.map(String::from));
        }
        for n in own {
            if seen.insert(n.clone()) {
                names.push((n, u.name.to_string()));
            }
        }
    }
    names
}

/// Writes, under `out`, containerd's `certs.d/<registry>/hosts.toml` for
/// every registry name and `_default`, the CRI config snippets for
/// containerd 1.x and 2.x, and `containers/registries.conf`.
pub fn generate(
    config: &Path,
    address: &Address,
    out: &Path,
    ca: Option<&str>,
) -> Result<GenerateReport, NodesError> {
    let config = Config::load(config).map_err(StartError::from)?;
    let names = registry_names(&config.upstreams);
    let mut files = Vec::new();
    let mut write = |rel: PathBuf, text: String| -> Result<(), NodesError> {
        let path = out.join(&rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| NodesError::Write {
                file: dir.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| NodesError::Write {
            file: path.clone(),
            source,
        })?;
        files.push(rel);
        Ok(())
    };
    let hosts = hosts_toml(address, ca);
    for (name, _) in &names {
        write(
            Path::new("containerd/certs.d")
                .join(name)
                .join("hosts.toml"),
            hosts.clone(),
        )?;
    }
    write(
        Path::new("containerd/certs.d/_default/hosts.toml").to_path_buf(),
        hosts,
    )?;
    write(
        "containerd/config-containerd-1.x.toml".into(),
        "# containerd 1.6/1.7 (config version 2): merge into /etc/containerd/config.toml.\n# Remove any registry.mirrors / registry.configs tables: they take precedence.\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n".into(),
    )?;
    write(
        "containerd/config-containerd-2.x.toml".into(),
        "# containerd 2.x (config version 3): merge into /etc/containerd/config.toml.\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n".into(),
    )?;
    write(
        "containers/registries.conf".into(),
        registries_conf(address, &names),
    )?;
    Ok(GenerateReport {
        out: out.to_path_buf(),
        files,
    })
}

fn hosts_toml(address: &Address, ca: Option<&str>) -> String {
    let url = address.url();
    let ca = match ca {
        Some(ca) => format!("  ca = {}\n", toml_string(ca)),
        None => String::new(),
    };
    format!(
        "# Written by `portcullis nodes generate`. Portcullis is the server, not\n# a mirror: containerd must not fall back to the registry when it denies.\nserver = \"{url}\"\n\n[host.\"{url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n{ca}"
    )
}

fn registries_conf(address: &Address, names: &[(String, String)]) -> String {
    let mut s = String::from(
        "# Written by `portcullis nodes generate`. Portcullis is each registry's\n# location (never a mirror, which falls back to the origin on a denial).\n# Install as /etc/containers/registries.conf (or a file in registries.conf.d).\nshort-name-mode = \"enforcing\"\nunqualified-search-registries = [\"docker.io\"]\n",
    );
    let insecure = if address.scheme == "http" {
        "insecure = true\n"
    } else {
        ""
    };
    for (name, upstream) in names {
        s.push_str(&format!(
            "\n[[registry]]\nprefix = {}\nlocation = {}\n{insecure}",
            toml_string(name),
            toml_string(&format!("{}/{upstream}", address.authority)),
        ));
    }
    s
}

/// A TOML basic string (JSON's escapes are TOML's).
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// What `nodes generate` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateReport {
    pub out: PathBuf,
    pub files: Vec<PathBuf>,
}

impl Report for GenerateReport {
    fn exit(&self) -> Exit {
        Exit::Success
    }
}

impl fmt::Display for GenerateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} files under {}:",
            self.files.len(),
            self.out.display()
        )?;
        for file in &self.files {
            writeln!(f, "  {}", file.display())?;
        }
        Ok(())
    }
}

/// The node files to look at; `None` skips a runtime.
pub struct NodeFiles<'a> {
    pub containerd_hosts: Option<&'a Path>,
    pub containerd_config: Option<&'a Path>,
    pub registries_conf: Option<&'a Path>,
    pub docker_daemon: Option<&'a Path>,
}

/// One way a node could pull around Portcullis.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Bypass {
    pub file: PathBuf,
    pub problem: String,
}

/// Reads the node's runtime configuration and lists every route to a
/// registry that does not go through `address`.
pub fn check(
    config: &Path,
    address: &Address,
    files: &NodeFiles<'_>,
) -> Result<CheckReport, NodesError> {
    let config = Config::load(config).map_err(StartError::from)?;
    let names = registry_names(&config.upstreams);
    let mut found = Vec::new();
    if let Some(dir) = files.containerd_hosts {
        check_containerd_hosts(dir, address, &names, &mut found);
    }
    if let Some(file) = files.containerd_config {
        check_containerd_config(file, files.containerd_hosts, &mut found);
    }
    let looked = [
        files.containerd_hosts,
        files.containerd_config,
        files.registries_conf,
        files.docker_daemon,
    ];
    if looked.iter().all(Option::is_none) {
        found.push(Bypass {
            file: PathBuf::from("(none)"),
            problem: "no runtime configuration found to check (no /etc/containerd, /etc/containers or /etc/docker under --root): nothing is known to route through Portcullis".into(),
        });
    }
    if let Some(file) = files.registries_conf {
        check_registries_conf(file, address, &names, &mut found);
    }
    if let Some(file) = files.docker_daemon {
        check_docker_daemon(file, &mut found);
    }
    Ok(CheckReport { bypasses: found })
}

fn read_toml(file: &Path, found: &mut Vec<Bypass>) -> Option<toml::Table> {
    let problem = match std::fs::read_to_string(file) {
        Ok(text) => match text.parse::<toml::Table>() {
            Ok(t) => return Some(t),
            // The parser's message can quote the file: say only where.
            Err(e) => format!(
                "not valid TOML (at byte {}); the runtime would ignore or refuse it",
                e.span().map_or(0, |s| s.start)
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => format!("cannot be read: {e}"),
    };
    found.push(Bypass {
        file: file.to_path_buf(),
        problem,
    });
    None
}

fn check_containerd_hosts(
    dir: &Path,
    address: &Address,
    names: &[(String, String)],
    found: &mut Vec<Bypass>,
) {
    let mut registries: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    registries.push("_default".into());
    // Registries configured on the node beyond Portcullis' own names.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !registries.contains(&name) && e.path().is_dir() {
                registries.push(name);
            }
        }
    }
    for registry in registries {
        let file = dir.join(&registry).join("hosts.toml");
        let Some(t) = read_toml(&file, found) else {
            if !file.exists() {
                found.push(Bypass {
                    file,
                    problem: if registry == "_default" {
                        "missing: registries with no hosts.toml of their own are pulled directly"
                            .into()
                    } else {
                        format!("missing: containerd pulls {registry} directly unless _default routes it through Portcullis")
                    },
                });
            }
            continue;
        };
        match t.get("server").and_then(toml::Value::as_str) {
            Some(s) if address.is(s) => {}
            Some(s) => found.push(Bypass {
                file: file.clone(),
                problem: format!(
                    "server is {s}, not Portcullis: containerd falls back to it when a host refuses"
                ),
            }),
            None => found.push(Bypass {
                file: file.clone(),
                problem: "no server: containerd falls back to the registry itself".into(),
            }),
        }
        let hosts = t.get("host").and_then(toml::Value::as_table);
        for h in hosts.into_iter().flat_map(|h| h.keys()) {
            if !address.is(h) {
                found.push(Bypass {
                    file: file.clone(),
                    problem: format!("host {h} is not Portcullis: a route around it"),
                });
            }
        }
        if hosts.is_none_or(|h| h.is_empty()) {
            found.push(Bypass {
                file: file.clone(),
                problem:
                    "no [host] table: containerd 1.6 ignores such a file and dials the registry"
                        .into(),
            });
        }
    }
}

fn check_containerd_config(file: &Path, hosts: Option<&Path>, found: &mut Vec<Bypass>) {
    found.extend(
        containerd_config_problems(file, hosts)
            .into_iter()
            .map(|problem| Bypass {
                file: file.to_path_buf(),
                problem,
            }),
    );
}

fn containerd_config_problems(file: &Path, hosts: Option<&Path>) -> Vec<String> {
    let t = match std::fs::read_to_string(file) {
        Ok(text) => match text.parse::<toml::Table>() {
            Ok(t) => t,
            Err(e) => {
                let at = e.span().map_or(0, |s| s.start);
                return vec![format!(
                    "not valid TOML (at byte {at}); containerd would refuse it"
                )];
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec!["missing: containerd 1.x then reads no hosts.toml (no config_path) and pulls every registry directly".into()];
        }
        Err(e) => return vec![format!("cannot be read: {e}")],
    };
    let mut out = Vec::new();
    // Config version 3 is containerd 2.x, whose default config_path is
    // /etc/containerd/certs.d; older versions have none by default.
    let version = t
        .get("version")
        .and_then(toml::Value::as_integer)
        .unwrap_or(1);
    let mut path_problem = false;
    let mut named_any = false;
    for plugin in [
        "io.containerd.grpc.v1.cri",
        "io.containerd.cri.v1.images",
        "cri",
    ] {
        let registry = t
            .get("plugins")
            .and_then(|p| p.get(plugin))
            .and_then(|p| p.get("registry"));
        let Some(registry) = registry else { continue };
        for legacy in ["mirrors", "configs"] {
            if registry
                .get(legacy)
                .and_then(toml::Value::as_table)
                .is_some_and(|m| !m.is_empty())
            {
                out.push(format!("plugins.\"{plugin}\".registry.{legacy} is set: it takes precedence over config_path (hosts.toml)"));
            }
        }
        match registry.get("config_path").and_then(toml::Value::as_str) {
            None if version >= 3 => {}
            None | Some("") => {
                path_problem = true;
                out.push(format!(
                    "plugins.\"{plugin}\".registry has no config_path: the hosts.toml files are not read"
                ));
            }
            Some(paths) => {
                named_any = true;
                let checked = |h: &Path| {
                    paths
                        .split(':')
                        .any(|p| Path::new(p) == h || h.ends_with(p.trim_start_matches('/')))
                };
                if let Some(h) = hosts.filter(|h| !checked(h)) {
                    path_problem = true;
                    out.push(format!(
                        "plugins.\"{plugin}\".registry.config_path is {paths}, not the hosts directory checked ({})",
                        h.display()
                    ));
                }
            }
        }
    }
    if version < 3 && !named_any && !path_problem {
        out.push("no registry config_path (containerd 1.x reads no hosts.toml without one): every registry is pulled directly".into());
    }
    if t.get("imports").is_some() {
        out.push("imports other config files, which are not checked: check each with --containerd-config".into());
    }
    out
}

fn check_registries_conf(
    file: &Path,
    address: &Address,
    names: &[(String, String)],
    found: &mut Vec<Bypass>,
) {
    let Some(t) = read_toml(file, found) else {
        if !file.exists() {
            found.push(Bypass {
                file: file.to_path_buf(),
                problem: "missing: podman and CRI-O pull every registry directly".into(),
            });
        }
        return;
    };
    let entries: Vec<&toml::Table> = t
        .get("registry")
        .and_then(toml::Value::as_array)
        .map(|a| a.iter().filter_map(toml::Value::as_table).collect())
        .unwrap_or_default();
    let through_portcullis = |location: &str| {
        location
            .to_ascii_lowercase()
            .strip_prefix(&address.authority)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    for e in &entries {
        let prefix = e
            .get("prefix")
            .or_else(|| e.get("location"))
            .and_then(toml::Value::as_str)
            .unwrap_or("?");
        let location = e.get("location").and_then(toml::Value::as_str);
        let blocked = e.get("blocked").and_then(toml::Value::as_bool) == Some(true);
        if !blocked && !location.is_some_and(through_portcullis) {
            found.push(Bypass {
                file: file.to_path_buf(),
                problem: format!(
                    "registry {prefix}: location {} is not Portcullis",
                    location.unwrap_or("(none)")
                ),
            });
        }
        if e.get("mirror")
            .and_then(toml::Value::as_array)
            .is_some_and(|m| !m.is_empty())
        {
            found.push(Bypass {
                file: file.to_path_buf(),
                problem: format!("registry {prefix} has mirrors: a pull a mirror refuses falls back to its location"),
            });
        }
    }
    for (name, _) in names {
        let covered = entries.iter().any(|e| {
            e.get("prefix")
                .or_else(|| e.get("location"))
                .and_then(toml::Value::as_str)
                == Some(name.as_str())
        });
        if !covered {
            found.push(Bypass {
                file: file.to_path_buf(),
                problem: format!("no [[registry]] for {name}: it is pulled directly"),
            });
        }
    }
}

fn check_docker_daemon(file: &Path, found: &mut Vec<Bypass>) {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            found.push(Bypass {
                file: file.to_path_buf(),
                problem: format!("cannot be read: {e}"),
            });
            return;
        }
    };
    let mirrors = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("registry-mirrors")
                .and_then(|m| m.as_array())
                .map(Vec::len)
        });
    if mirrors.is_some_and(|n| n > 0) {
        found.push(Bypass {
            file: file.to_path_buf(),
            problem: "registry-mirrors: Docker falls back to Docker Hub when the mirror refuses, and pulls other registries directly; block the node's egress to registries".into(),
        });
    }
}

/// Every bypass found; none means the files route through Portcullis.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub bypasses: Vec<Bypass>,
}

impl Report for CheckReport {
    /// 0 when nothing bypasses Portcullis, 1 otherwise.
    fn exit(&self) -> Exit {
        if self.bypasses.is_empty() {
            Exit::Success
        } else {
            Exit::Failure
        }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bypasses.is_empty() {
            return writeln!(f, "ok: every route checked goes through Portcullis");
        }
        writeln!(f, "{} route(s) around Portcullis:", self.bypasses.len())?;
        for b in &self.bypasses {
            writeln!(f, "  {}: {}", b.file.display(), b.problem)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(
        "--address {0}: give the URL runtimes reach Portcullis at, like https://portcullis.example.internal:5000"
    )]
    Address(String),
    #[error("cannot write {}: {source}", file.display())]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
}

impl Failure for NodesError {
    fn exit(&self) -> Exit {
        Exit::NoDecision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_matches_with_or_without_the_default_scheme_and_nothing_else() {
        let a =
            Address::parse("https://Portcullis.example:5000/").unwrap_or_else(|e| panic!("{e}"));
        assert!(a.is("https://portcullis.example:5000"));
        assert!(a.is("portcullis.example:5000"));
        assert!(a.is("https://portcullis.example:5000/"));
        assert!(!a.is("http://portcullis.example:5000"));
        assert!(!a.is("https://portcullis.example:5001"));
        assert!(!a.is("https://registry-1.docker.io"));
        assert!(Address::parse("portcullis:5000").is_err());
        assert!(Address::parse("https://p:5000/v2").is_err());
    }
}
