//! A typed builder for the config a test [`Proxy`](super::Proxy) runs with.
//!
//! [`ProxyConfig`] renders the TOML Portcullis loads: the `[server]`,
//! `[admin]`, `[cache]` and `[audit]` tables every test proxy needs (its
//! listeners, admin token file, cache dir and audit file), then the tables a
//! test adds ([`Upstream`], [`Authority`], [`Policy`], [`Exception`], raw
//! text) in the order it adds them, which is the order policies match in.
//! Values are quoted here, so a test names what it configures, not how TOML
//! spells it. Every table has a `key` escape hatch for a key the builder does
//! not name, and [`ProxyConfig::raw`] takes whole tables.

use std::sync::Arc;

use portcullis::clock::ManualClock;

/// A TOML basic string holding `s`.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML array of strings.
pub fn list(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", items.join(", "))
}

/// A TOML inline table of string values, in this order.
pub fn inline(pairs: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k} = {}", quoted(v)))
        .collect();
    format!("{{ {} }}", pairs.join(", "))
}

/// `key = value` lines (values already TOML) under a table header.
#[derive(Clone, Debug)]
struct Table {
    header: &'static str,
    lines: Vec<String>,
}

impl Table {
    fn new(header: &'static str, name: &str) -> Table {
        Table {
            header,
            lines: vec![format!("name = {}", quoted(name))],
        }
    }

    fn set(&mut self, key: &str, value: String) {
        self.lines.push(format!("{key} = {value}"));
    }

    fn render(&self) -> String {
        let mut out = format!("[[{}]]\n", self.header);
        for line in &self.lines {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// An `[[upstream]]` entry.
#[derive(Clone, Debug)]
pub struct Upstream(Table);

impl Upstream {
    /// A plain-HTTP registry (`insecure = true`) with no timeouts set.
    pub fn new(name: &str, url: &str) -> Upstream {
        let mut t = Table::new("upstream", name);
        t.set("url", quoted(url));
        t.set("insecure", "true".into());
        Upstream(t)
    }

    /// A plain-HTTP test registry with the suite's usual timeouts: 2 s to
    /// connect, 5 s for headers and between body reads.
    pub fn test(name: &str, url: &str) -> Upstream {
        Upstream::new(name, url).timeouts("2s", "5s", "5s")
    }

    /// `connect_timeout`, `response_timeout` and `idle_timeout`.
    pub fn timeouts(self, connect: &str, response: &str, idle: &str) -> Upstream {
        self.key("connect_timeout", &quoted(connect))
            .key("response_timeout", &quoted(response))
            .key("idle_timeout", &quoted(idle))
    }

    /// Logs in with the `{"username", "password"}` JSON file at `path`.
    pub fn credentials_file(self, path: &std::path::Path) -> Upstream {
        self.key("credentials_file", &quoted(&path.display().to_string()))
    }

    /// Hosts besides its own that may act as its token realm.
    pub fn token_realm_hosts(self, hosts: &[&str]) -> Upstream {
        self.key("token_realm_hosts", &list(hosts))
    }

    /// Any other key, its value written as TOML (`"2"`, `"[\"localhost\"]"`).
    pub fn key(mut self, key: &str, toml_value: &str) -> Upstream {
        self.0.set(key, toml_value.into());
        self
    }

    /// The table as TOML, for a config file a test writes whole.
    pub fn toml(&self) -> String {
        self.0.render()
    }
}

/// How a keyless authority matches a certificate's SAN.
#[derive(Clone, Copy, Debug)]
pub enum Subject<'a> {
    /// `subject`: the SAN equals this.
    Exact(&'a str),
    /// `subject_regex`: the SAN fully matches this regular expression.
    Regex(&'a str),
}

/// An `[[authority]]` entry.
#[derive(Clone, Debug)]
pub struct Authority(Table);

impl Authority {
    /// An authority with only its name; add its material with [`Self::key`].
    pub fn named(name: &str) -> Authority {
        Authority(Table::new("authority", name))
    }

    /// Cosign public keys (files or PEM text).
    pub fn keys(name: &str, keys: &[&str]) -> Authority {
        Authority::named(name).key("keys", &list(keys))
    }

    /// Vendor root certificates (files or PEM text).
    pub fn ca_roots(name: &str, roots: &[&str]) -> Authority {
        Authority::named(name).key("ca_roots", &list(roots))
    }

    /// Fulcio certificates from `issuer` whose SAN is `subject`.
    pub fn keyless(name: &str, issuer: &str, subject: Subject<'_>) -> Authority {
        let (key, value) = match subject {
            Subject::Exact(s) => ("subject", s),
            Subject::Regex(r) => ("subject_regex", r),
        };
        Authority::named(name).key("keyless", &inline(&[("issuer", issuer), (key, value)]))
    }

    /// Material fetched from a URL: `source = { url = …, <pairs> }`.
    pub fn source(name: &str, url: &str, pairs: &[(&str, &str)]) -> Authority {
        let mut all = vec![("url", url)];
        all.extend_from_slice(pairs);
        Authority::named(name).key("source", &inline(&all))
    }

    /// `trusted_root`: a `trusted_root.json` path or `"sigstore-public-good"`.
    pub fn trusted_root(self, root: &str) -> Authority {
        self.key("trusted_root", &quoted(root))
    }

    /// `require_tlog = true`.
    pub fn require_tlog(self) -> Authority {
        self.key("require_tlog", "true")
    }

    /// `require_sct = false`: the tests' private Fulcio has no CT log.
    pub fn without_sct(self) -> Authority {
        self.key("require_sct", "false")
    }

    /// `revoked`: SHA-256 fingerprints no longer trusted.
    pub fn revoked(self, fingerprints: &[&str]) -> Authority {
        self.key("revoked", &list(fingerprints))
    }

    /// Any other key, its value written as TOML.
    pub fn key(mut self, key: &str, toml_value: &str) -> Authority {
        self.0.set(key, toml_value.into());
        self
    }

    /// Keys written as TOML lines, for a test whose parameter is the
    /// authority's text.
    pub fn lines(mut self, toml_lines: &str) -> Authority {
        self.0.lines.push(toml_lines.into());
        self
    }
}

/// One entry of a policy's `attestations = [...]`.
#[derive(Clone, Debug)]
pub struct Attestation(Vec<(String, String)>);

impl Attestation {
    /// A statement of `predicate_type` signed by one of `authorities`.
    pub fn new(name: &str, predicate_type: &str, authorities: &[&str]) -> Attestation {
        Attestation(vec![
            ("name".into(), quoted(name)),
            ("predicate_type".into(), quoted(predicate_type)),
            ("authorities".into(), list(authorities)),
        ])
    }

    /// The `[[condition]]` the statement must satisfy.
    pub fn condition(mut self, condition: &str) -> Attestation {
        self.0.push(("condition".into(), quoted(condition)));
        self
    }

    /// How old the attested evidence may be.
    pub fn max_age(mut self, max_age: &str) -> Attestation {
        self.0.push(("max_age".into(), quoted(max_age)));
        self
    }

    fn render(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        format!("{{ {} }}", pairs.join(", "))
    }
}

/// A `[[policy]]` entry.
#[derive(Clone, Debug)]
pub struct Policy(Table);

impl Policy {
    fn matching(name: &str, glob: &str) -> Policy {
        let mut t = Table::new("policy", name);
        t.set("match", list(&[glob]));
        Policy(t)
    }

    /// Serves whatever matches `glob` without verification.
    pub fn allow_unverified(name: &str, glob: &str) -> Policy {
        Policy::matching(name, glob).key("allow_unverified", "true")
    }

    /// Serves nothing that matches `glob`.
    pub fn deny(name: &str, glob: &str) -> Policy {
        Policy::matching(name, glob).key("deny", "true")
    }

    /// Requires a signature by any of `authorities`.
    pub fn signed_by(name: &str, glob: &str, authorities: &[&str]) -> Policy {
        let signatures = format!("{{ authorities = {} }}", list(authorities));
        Policy::matching(name, glob).key("signatures", &signatures)
    }

    /// Requires signatures by `require` (`"any"`, `"all"`, a number) of
    /// `authorities`.
    pub fn signed_by_required(
        name: &str,
        glob: &str,
        authorities: &[&str],
        require: &str,
    ) -> Policy {
        let signatures = format!(
            "{{ authorities = {}, require = {} }}",
            list(authorities),
            quoted(require)
        );
        Policy::matching(name, glob).key("signatures", &signatures)
    }

    /// `mode = "audit"`: allow, recording what enforce mode would deny.
    pub fn audit(self) -> Policy {
        self.key("mode", "\"audit\"")
    }

    /// The in-toto attestations required besides the signatures.
    pub fn attestations(self, attestations: &[Attestation]) -> Policy {
        let entries: Vec<String> = attestations.iter().map(Attestation::render).collect();
        self.key("attestations", &format!("[ {} ]", entries.join(", ")))
    }

    /// Any other key, its value written as TOML.
    pub fn key(mut self, key: &str, toml_value: &str) -> Policy {
        self.0.set(key, toml_value.into());
        self
    }

    /// The table as TOML, for a config file a test writes whole.
    pub fn toml(&self) -> String {
        self.0.render()
    }

    /// The policy `allow-unverified`: everything is served unverified.
    pub fn allow_all() -> Policy {
        Policy::allow_unverified("allow-unverified", "**")
    }
}

/// An `[[exception]]` (a risk acceptance) pinned to one manifest digest.
#[derive(Clone, Debug)]
pub struct Exception {
    name: Option<String>,
    glob: String,
    digest: String,
    expires: String,
    ticket: String,
    reason: String,
}

impl Exception {
    pub fn pinned(glob: &str, digest: &str, expires: &str, ticket: &str, reason: &str) -> Self {
        Exception {
            name: None,
            glob: glob.into(),
            digest: digest.into(),
            expires: expires.into(),
            ticket: ticket.into(),
            reason: reason.into(),
        }
    }

    /// Its name (else the ticket is).
    pub fn name(mut self, name: &str) -> Exception {
        self.name = Some(name.into());
        self
    }

    fn render(&self) -> String {
        let name = self
            .name
            .as_deref()
            .map(|n| format!("name = {}\n", quoted(n)))
            .unwrap_or_default();
        format!(
            "[[exception]]\n{name}match = {}\ndigest = {}\nexpires = {}\nticket = {}\nreason = {}\n",
            quoted(&self.glob),
            quoted(&self.digest),
            quoted(&self.expires),
            quoted(&self.ticket),
            quoted(&self.reason),
        )
    }
}

/// Everything a test [`Proxy`](super::Proxy) starts from: its config and,
/// optionally, the folder it runs in, its clock and its admin port.
#[derive(Default)]
pub struct ProxyConfig {
    pub(super) dir: Option<tempfile::TempDir>,
    pub(super) clock: Option<Arc<ManualClock>>,
    pub(super) admin_port: Option<u16>,
    server: Vec<String>,
    admin: Vec<String>,
    cache: Vec<String>,
    limits: Vec<String>,
    tables: Vec<String>,
}

impl ProxyConfig {
    pub fn new() -> ProxyConfig {
        ProxyConfig::default()
    }

    /// Runs in `dir` (which may hold files the config names) instead of a
    /// fresh temporary folder.
    pub fn in_dir(mut self, dir: tempfile::TempDir) -> ProxyConfig {
        self.dir = Some(dir);
        self
    }

    /// Takes its time from `clock`, which the test advances instead of
    /// sleeping.
    pub fn clock(mut self, clock: &Arc<ManualClock>) -> ProxyConfig {
        self.clock = Some(Arc::clone(clock));
        self
    }

    /// Listens for admin requests on `port` (so replicas can name each other
    /// before they start) instead of a free port.
    pub fn admin_port(mut self, port: u16) -> ProxyConfig {
        self.admin_port = Some(port);
        self
    }

    /// `[admin] peers`: the other replicas' admin listeners.
    pub fn peers(self, peers: &[&str]) -> ProxyConfig {
        self.admin(&format!("peers = {}", list(peers)))
    }

    /// `[server] default_upstream`.
    pub fn default_upstream(self, name: &str) -> ProxyConfig {
        self.server(&format!("default_upstream = {}", quoted(name)))
    }

    /// More `[server]` keys (TOML lines).
    pub fn server(mut self, keys: &str) -> ProxyConfig {
        self.server.push(keys.into());
        self
    }

    /// More `[admin]` keys (TOML lines), e.g. `peers = [...]`.
    pub fn admin(mut self, keys: &str) -> ProxyConfig {
        self.admin.push(keys.into());
        self
    }

    /// More `[cache]` keys (TOML lines), e.g. `tag_ttl = "1s"`.
    pub fn cache(mut self, keys: &str) -> ProxyConfig {
        self.cache.push(keys.into());
        self
    }

    /// `[limits]` keys (TOML lines).
    pub fn limits(mut self, keys: &str) -> ProxyConfig {
        self.limits.push(keys.into());
        self
    }

    /// A plain-HTTP test upstream ([`Upstream::test`]).
    pub fn upstream(self, name: &str, url: &str) -> ProxyConfig {
        self.upstream_with(Upstream::test(name, url))
    }

    pub fn upstream_with(self, upstream: Upstream) -> ProxyConfig {
        self.raw(&upstream.0.render())
    }

    pub fn authority(self, authority: Authority) -> ProxyConfig {
        self.raw(&authority.0.render())
    }

    /// A policy, matched after those added before it.
    pub fn policy(self, policy: Policy) -> ProxyConfig {
        self.raw(&policy.0.render())
    }

    /// The policy `allow-unverified`: everything is served unverified.
    pub fn allow_all(self) -> ProxyConfig {
        self.policy(Policy::allow_all())
    }

    /// A `[[condition]]`: a CEL expression over a verified statement.
    pub fn condition(self, name: &str, expr: &str) -> ProxyConfig {
        self.raw(&format!(
            "[[condition]]\nname = {}\nexpr = {}\n",
            quoted(name),
            quoted(expr)
        ))
    }

    pub fn exception(self, exception: Exception) -> ProxyConfig {
        self.raw(&exception.render())
    }

    /// Tables written as TOML, for what the builder does not name.
    pub fn raw(mut self, toml: &str) -> ProxyConfig {
        self.tables.push(toml.into());
        self
    }

    /// The config file's text for a proxy on these ports.
    pub fn render(&self, port: u16, admin_port: u16) -> String {
        let lines = |keys: &[String]| -> String {
            keys.iter().map(|k| format!("{k}\n")).collect::<String>()
        };
        let limits = if self.limits.is_empty() {
            String::new()
        } else {
            format!("[limits]\n{}\n", lines(&self.limits))
        };
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{}\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken_file = \"admin.token\"\n{}\n[cache]\ndir = \"cache\"\n{}\n[audit]\nsink = \"audit.jsonl\"\n\n{limits}{}",
            lines(&self.server),
            lines(&self.admin),
            lines(&self.cache),
            self.tables.join("\n"),
        )
    }
}
