//! Configuration: the TOML file ([`raw`]) and the validated [`Config`] built
//! from it. Validation reports every problem at once, each with its key path.

pub mod raw;
mod units;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use raw::RawConfig;
pub use units::{parse_duration, parse_size};

use crate::material::SubjectMatch;
use crate::oci::UpstreamName;
use crate::policy::{
    AttestationRequirement, Condition, Exception, Glob, Mode, Policy, PolicySet, Require, Rule,
};

/// The least `limits.decision_bytes` may be: what one decision may hold at
/// once (three document sets of 64 MiB and eight 4 MiB referrer manifests;
/// `pull` checks this against its document limits when it compiles).
pub const DECISION_MOST_BYTES: u64 = 3 * (64 << 20) + 8 * (4 << 20);

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: Option<AdminConfig>,
    pub cache: CacheConfig,
    pub limits: LimitsConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub authorities: Vec<AuthorityConfig>,
    pub policies: PolicySet,
    pub audit: AuditConfig,
    /// The file this config was read from (what a reload re-reads).
    pub source_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub sink: crate::audit::Sink,
    /// Events queued for the sink before new ones are dropped (and counted).
    pub queue: usize,
}

/// A vendor: what its signatures must chain or match to.
#[derive(Debug, Clone)]
pub struct AuthorityConfig {
    pub name: String,
    pub kind: AuthorityKind,
    /// Sigstore trusted root for transparency-log (and Fulcio/TSA) evidence.
    pub trusted_root: Option<TrustedRootSource>,
    /// A signature counts only with verified transparency-log or TSA evidence.
    pub require_tlog: bool,
    /// Keyless certificates must carry a verified SCT.
    pub require_sct: bool,
    /// A vendor PKI's leaf certificates must carry the EKU extension (with
    /// code signing); by default an absent EKU is unrestricted (RFC 5280).
    pub require_code_signing_eku: bool,
    /// SHA-256 fingerprints (hex) of keys or CA certificates no longer trusted.
    pub revoked: Vec<String>,
    /// Serial numbers (normalised hex) of certificates no longer trusted.
    pub revoked_serials: Vec<String>,
}

/// Trust material fetched over HTTPS and refreshed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    pub url: reqwest::Url,
    /// What the document holds: PEM public keys, or PEM CA certificates.
    pub kind: SourceKind,
    pub refresh: Duration,
    /// Past this long without a successful refresh the authority is
    /// unavailable and decisions needing it deny `trust_unavailable`.
    pub max_stale: Duration,
    pub ca_file: Option<PathBuf>,
    pub max_bytes: u64,
    /// A governance public key that must have signed the document (the
    /// signature, base64, at `<url>.sig`).
    pub signed_by: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Keys,
    CaRoots,
}

/// PEM material: a file (watched and re-read when it changes), or the PEM
/// text itself written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

impl Pem {
    pub fn read(&self) -> Result<String, String> {
        match self {
            Pem::File(p) => {
                std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            }
            Pem::Inline(text) => Ok(text.clone()),
        }
    }

    /// How problems and status name it.
    pub fn label(&self) -> String {
        match self {
            Pem::File(p) => p.display().to_string(),
            Pem::Inline(_) => "inline PEM".into(),
        }
    }

    pub fn file(&self) -> Option<&Path> {
        match self {
            Pem::File(p) => Some(p),
            Pem::Inline(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum AuthorityKind {
    /// Cosign public keys (PEM).
    Keys(Vec<Pem>),
    /// Vendor X.509 roots (PEM) the signing certificate must chain to.
    CaRoots(Vec<Pem>),
    /// Fulcio-issued certificates with this OIDC issuer and subject.
    Keyless {
        issuer: String,
        subject: SubjectMatch,
    },
    /// Keys or CA roots fetched from a URL and refreshed.
    Source(SourceConfig),
}

#[derive(Debug, Clone)]
pub enum TrustedRootSource {
    /// The public-good instance's root embedded at build time.
    PublicGood,
    File(PathBuf),
    /// `trusted_root.json` as a TUF repository publishes it, verified from
    /// an initial root and refreshed.
    Tuf(TufSource),
}

/// A Sigstore TUF repository (the public-good one or a mirror).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TufSource {
    pub url: reqwest::Url,
    /// The initial `root.json` trust starts from; `None`: the public-good
    /// repository's root embedded at build time.
    pub root: Option<PathBuf>,
    pub refresh: Duration,
    /// Past this long without a verified refresh, authorities relying on this
    /// repository are unavailable (`trust_unavailable`).
    pub max_stale: Duration,
    pub ca_file: Option<PathBuf>,
    /// Where verified metadata is kept for a start without the network (it is
    /// verified again from the initial root before use).
    pub cache_dir: PathBuf,
}

impl TufSource {
    /// The key its verified material is kept and reported under.
    pub fn key(&self) -> String {
        format!("tuf:{}", self.url)
    }
}

/// The public-good Sigstore TUF repository.
pub const PUBLIC_GOOD_TUF: &str = "https://tuf-repo-cdn.sigstore.dev";

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub default_upstream: Option<UpstreamName>,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/2: GOAWAY first).
    pub idle_timeout: Duration,
    /// A response whose client takes no data for this long is dropped
    /// (HTTP/2: the stream is reset; HTTP/1: the connection is closed).
    pub send_timeout: Duration,
    /// HTTP/2 streams a client may have open at once on one connection.
    pub max_streams_per_connection: u32,
    /// HTTP/2 PING interval; a peer that does not answer within it is
    /// closed.
    pub keepalive_interval: Duration,
    /// TLS on the registry listener (PEM files, reloaded when they change).
    pub tls: Option<TlsConfig>,
    /// Who may pull, when set.
    pub auth: Option<ClientAuthConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate chaining to these CAs (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Credentials a client must present (either kind). Files are re-read
/// when they change.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientAuthConfig {
    /// Lines `identity:token`; the token is sent as `Bearer <token>` or as
    /// Basic auth with the identity as the user name.
    pub tokens_file: Option<PathBuf>,
    /// Apache htpasswd with bcrypt hashes.
    pub htpasswd_file: Option<PathBuf>,
    /// bcrypt checks running at once (on the blocking pool); past it, a
    /// password that is not remembered is answered 503 at once.
    pub password_checks: usize,
    /// Failed passwords from one client address (IPv6: its /64) within
    /// `failure_backoff` before its password attempts are refused for
    /// `failure_backoff` without checking; 0: never.
    pub failure_limit: u32,
    pub failure_backoff: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// A file holding the bearer token `/admin/*` endpoints require; without
    /// one they are disabled.
    pub token_file: Option<PathBuf>,
    /// The other replicas' admin listeners, asked whether their trust is
    /// fresh when this replica's is not (see [`crate::readiness`]).
    pub peers: Vec<PeerAddress>,
}

/// Admin listeners of other replicas may be listed, at most this many (a
/// name may resolve to more; only this many addresses are asked).
pub const MAX_PEERS: usize = 16;

/// A peer replica's admin listener: an IP address or a DNS name (which may
/// resolve to several replicas, as a headless Service does) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for PeerAddress {
    type Err = String;

    /// `host:port`, the host an IPv4 address, a bracketed IPv6 address or a
    /// DNS name (letters, digits and hyphens in dot-separated labels).
    fn from_str(s: &str) -> Result<PeerAddress, String> {
        let bad = || {
            format!("`{s}` is not an address like \"portcullis-peers:9090\" or \"10.0.0.5:9090\"")
        };
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return match addr.port() {
                0 => Err(bad()),
                port => Ok(PeerAddress {
                    host: addr.ip().to_string(),
                    port,
                }),
            };
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
        let host = host.strip_suffix('.').unwrap_or(host);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(bad());
        }
        // All-numeric labels would be an IPv4 address, and that parsed above.
        if host
            .split('.')
            .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad());
        }
        Ok(PeerAddress {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Process-wide bounds on decisions in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Manifest decisions running at once.
    pub decisions: usize,
    /// Bytes decisions in flight may hold in all.
    pub decision_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    /// The most a blob fill takes when no manifest declares the blob's size
    /// and the upstream sends no Content-Length.
    pub max_blob_bytes: u64,
    pub memory_bytes: u64,
    pub tag_ttl: Duration,
    pub max_stale: Duration,
    pub verdict_ttl: Duration,
    pub deny_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: UpstreamName,
    pub url: reqwest::Url,
    pub ca_file: Option<PathBuf>,
    pub credentials_file: Option<PathBuf>,
    /// Hosts besides the upstream's own that may serve as its token realm.
    pub token_realm_hosts: Vec<String>,
    /// Docker Hub's rule: single-component names get `library/`.
    pub library_prefix: bool,
    pub connect_timeout: Duration,
    /// Requests to this upstream in flight at once (its connections too);
    /// more wait up to `connect_timeout` for a slot, then fail 503.
    pub max_requests: usize,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
}

/// One problem in a config file, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} has {} problem(s):",
            self.file.display(),
            self.problems.len()
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a config file. Relative paths inside it are
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |path_key: &str, message: String| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                path: path_key.into(),
                message,
            }],
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail("(file)", e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Config::from_toml(&text, base).map_err(|problems| ConfigError {
            file: path.to_path_buf(),
            problems,
        })?;
        config.source_file = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates TOML text; `base` anchors relative paths.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, Vec<Problem>> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| vec![parse_problem("(syntax)".into(), text, &e)])?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            vec![parse_problem(path, text, e.inner())]
        })?;
        Validator::new(base).config(raw)
    }
}

/// A parse error as its key path, position and what was wrong, never the
/// text it concerns: the file may not be what it should (a config replaced
/// by a link to a secret), and the problem goes to the log, the audit log
/// and the `/admin/reload` response. TOML's own rendering quotes the
/// offending line; serde's messages quote values.
fn parse_problem(path: String, text: &str, e: &toml::de::Error) -> Problem {
    let message = without_quoted_values(e.message().trim());
    let message = match e.span() {
        Some(span) => {
            let (line, column) = position(text, span.start);
            format!("{message} (line {line}, column {column})")
        }
        None => message,
    };
    Problem {
        path,
        message: message.replace('\n', " "),
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// `message` with what it quotes from the file replaced by `…`. Parse
/// messages read "<what was found>, expected <what the schema wants>": the
/// found part may quote a value (serde's ``invalid type: string "…"``,
/// ``unknown variant `…` ``), the expected part names only the schema's
/// keys and tokens, and is kept.
pub(crate) fn without_quoted_values(message: &str) -> String {
    if message.starts_with("missing field") || message.starts_with("unknown field") {
        // It names a key, as the key path does: the schema's or the file's.
        return message.to_string();
    }
    // What serde found is quoted from the file; what it expected (from the
    // first "expected" outside a quote on) is the schema's and is kept.
    let mut out = String::with_capacity(message.len());
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in message.char_indices() {
        match quote {
            None if message[i..].starts_with("expected") => {
                out.push_str(&message[i..]);
                return out;
            }
            None if c == '"' || c == '`' => {
                quote = Some(c);
                out.push(c);
            }
            None => out.push(c),
            Some(_) if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => {
                quote = None;
                out.push('…');
                out.push(q);
            }
            Some(_) => {}
        }
    }
    if quote.is_some() {
        out.push('…');
    }
    out
}

/// Collects problems while building the validated config.
struct Validator<'a> {
    base: &'a Path,
    problems: Vec<Problem>,
}

impl<'a> Validator<'a> {
    fn new(base: &'a Path) -> Self {
        Validator {
            base,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn check<T>(&mut self, path: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|m| self.problem(path, m)).ok()
    }

    fn duration(&mut self, path: &str, v: Option<&str>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => self.check(path, parse_duration(s)).unwrap_or(default),
        }
    }

    /// A duration that must not be zero (a zero timeout would close
    /// everything at once).
    fn positive_duration(&mut self, path: &str, v: Option<&str>, default: Duration) -> Duration {
        let d = self.duration(path, v, default);
        if d.is_zero() {
            self.problem(path, "must be longer than zero");
            return default;
        }
        d
    }

    fn size(&mut self, path: &str, v: Option<&str>, default: u64) -> u64 {
        match v {
            None => default,
            Some(s) => self.check(path, parse_size(s)).unwrap_or(default),
        }
    }

    /// `admin.peers`: at most [`MAX_PEERS`] addresses, each once.
    fn peers(&mut self, raw: &[String]) -> Vec<PeerAddress> {
        if raw.len() > MAX_PEERS {
            self.problem(
                "admin.peers",
                format!("lists {} peers; at most {MAX_PEERS} are asked", raw.len()),
            );
        }
        let mut peers: Vec<PeerAddress> = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let path = format!("admin.peers[{i}]");
            let Some(peer) = self.check(&path, s.parse()) else {
                continue;
            };
            if peers.contains(&peer) {
                self.problem(path, format!("`{peer}` is listed twice"));
                continue;
            }
            peers.push(peer);
        }
        peers
    }

    fn addr(&mut self, path: &str, s: &str) -> SocketAddr {
        let parsed = s
            .parse()
            .map_err(|_| format!("`{s}` is not an address like \"127.0.0.1:5000\""));
        self.check(path, parsed)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    fn tuf(&mut self, path: &str, raw: &raw::RawTuf, cache_dir: &Path) -> Option<TufSource> {
        let url = self.check(
            &format!("{path}.tuf"),
            reqwest::Url::parse(&raw.tuf)
                .map_err(|e| format!("`{}` is not a URL: {e}", raw.tuf))
                .and_then(|u| match u.scheme() {
                    "https" => Ok(u),
                    _ => Err("a TUF repository is fetched over https only".into()),
                }),
        )?;
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(url.as_str().trim_end_matches('/').as_bytes());
        Some(TufSource {
            root: raw.root.as_deref().map(|p| self.path(p)),
            refresh: self.duration(
                &format!("{path}.refresh"),
                raw.refresh.as_deref(),
                Duration::from_secs(6 * 3600),
            ),
            max_stale: self.duration(
                &format!("{path}.max_stale"),
                raw.max_stale.as_deref(),
                Duration::from_secs(7 * 24 * 3600),
            ),
            ca_file: raw.ca_file.as_deref().map(|p| self.path(p)),
            cache_dir: cache_dir.join("tuf").join(hex::encode(&digest[..8])),
            url,
        })
    }

    /// A PEM file path (relative to the config), or PEM text itself.
    fn pem(&self, s: &str) -> Pem {
        if s.trim_start().starts_with("-----BEGIN") {
            Pem::Inline(s.to_string())
        } else {
            Pem::File(self.path(s))
        }
    }

    fn path(&self, s: &str) -> PathBuf {
        self.base.join(s)
    }

    fn config(mut self, raw: RawConfig) -> Result<Config, Vec<Problem>> {
        let upstreams: Vec<UpstreamConfig> = raw
            .upstreams
            .iter()
            .enumerate()
            .filter_map(|(i, u)| self.upstream(i, u))
            .collect();
        if raw.upstreams.is_empty() {
            self.problem("upstream", "at least one [[upstream]] is required");
        }
        let mut seen = HashSet::new();
        for (i, u) in upstreams.iter().enumerate() {
            if !seen.insert(u.name.clone()) {
                self.problem(
                    format!("upstream[{i}].name"),
                    format!("`{}` is used twice", u.name),
                );
            }
        }
        let server = self.server(&raw.server, &seen);
        let admin = raw.admin.as_ref().map(|a| AdminConfig {
            listen: self.addr("admin.listen", &a.listen),
            token_file: a.token_file.as_deref().map(|p| self.path(p)),
            peers: self.peers(&a.peers),
        });
        let audit = AuditConfig {
            sink: match raw.audit.as_ref().and_then(|a| a.sink.as_deref()) {
                None | Some("stdout") => crate::audit::Sink::Stdout,
                Some(path) => crate::audit::Sink::File(self.path(path)),
            },
            queue: raw.audit.as_ref().and_then(|a| a.queue).unwrap_or(10_000),
        };
        let cache = self.cache(&raw.cache);
        let limits = self.limits(&raw.limits);
        let authorities: Vec<(usize, AuthorityConfig)> = raw
            .authorities
            .iter()
            .enumerate()
            .filter_map(|(i, a)| self.authority(i, a, &cache.dir).map(|a| (i, a)))
            .collect();
        let mut names = HashSet::new();
        for (i, a) in &authorities {
            if !names.insert(a.name.clone()) {
                self.problem(
                    format!("authority[{i}].name"),
                    format!("`{}` is used twice", a.name),
                );
            }
        }
        self.shared_tuf_repositories(&authorities);
        let authorities: Vec<AuthorityConfig> = authorities.into_iter().map(|(_, a)| a).collect();
        let conditions = self.conditions(&raw.conditions);
        let exceptions = self.exceptions(&raw.exceptions);
        let policies = self
            .policies(&raw.policies, &names, &conditions)
            .with_exceptions(exceptions);
        if self.problems.is_empty() {
            Ok(Config {
                server,
                admin,
                cache,
                limits,
                upstreams,
                authorities,
                policies,
                audit,
                source_file: None,
            })
        } else {
            Err(self.problems)
        }
    }

    fn limits(&mut self, raw: &raw::RawLimits) -> LimitsConfig {
        let decisions = match raw.decisions {
            Some(0) => {
                self.problem("limits.decisions", "must be at least 1");
                1
            }
            n => n.unwrap_or(64),
        };
        let least = DECISION_MOST_BYTES;
        let decision_bytes = self.size(
            "limits.decision_bytes",
            raw.decision_bytes.as_deref(),
            512 << 20,
        );
        if decision_bytes < least {
            self.problem(
                "limits.decision_bytes",
                format!(
                    "must be at least {}MiB, what one decision may hold",
                    least >> 20
                ),
            );
        }
        if decision_bytes > u64::from(u32::MAX) * 16 {
            self.problem("limits.decision_bytes", "must be at most 64GiB");
        }
        LimitsConfig {
            decisions,
            decision_bytes,
        }
    }

    fn server(&mut self, raw: &raw::RawServer, names: &HashSet<UpstreamName>) -> ServerConfig {
        let default_upstream = raw.default_upstream.as_deref().and_then(|s| {
            let name = self.check("server.default_upstream", s.parse::<UpstreamName>())?;
            if !names.contains(&name) {
                self.problem(
                    "server.default_upstream",
                    format!("`{name}` is not the name of any [[upstream]]"),
                );
            }
            Some(name)
        });
        ServerConfig {
            listen: self.addr("server.listen", &raw.listen),
            default_upstream,
            header_read_timeout: self.duration(
                "server.header_read_timeout",
                raw.header_read_timeout.as_deref(),
                Duration::from_secs(10),
            ),
            max_connections: raw.max_connections.unwrap_or(10_000),
            idle_timeout: self.positive_duration(
                "server.idle_timeout",
                raw.idle_timeout.as_deref(),
                Duration::from_secs(60),
            ),
            send_timeout: self.positive_duration(
                "server.send_timeout",
                raw.send_timeout.as_deref(),
                Duration::from_secs(30),
            ),
            max_streams_per_connection: match raw.max_streams_per_connection {
                None => 100,
                Some(0) => {
                    self.problem("server.max_streams_per_connection", "must be at least 1");
                    100
                }
                Some(n) => n,
            },
            keepalive_interval: self.positive_duration(
                "server.keepalive_interval",
                raw.keepalive_interval.as_deref(),
                Duration::from_secs(20),
            ),
            tls: match (&raw.tls_cert, &raw.tls_key) {
                (Some(c), Some(k)) => Some(TlsConfig {
                    cert: self.path(c),
                    key: self.path(k),
                    client_ca: raw.client_ca.as_deref().map(|p| self.path(p)),
                }),
                (None, None) => {
                    if raw.client_ca.is_some() {
                        self.problem("server.client_ca", "needs tls_cert and tls_key");
                    }
                    None
                }
                _ => {
                    self.problem("server.tls_cert", "give both tls_cert and tls_key");
                    None
                }
            },
            auth: raw.auth.as_ref().and_then(|a| {
                if a.tokens_file.is_none() && a.htpasswd_file.is_none() {
                    self.problem("server.auth", "give tokens_file, htpasswd_file or both");
                    return None;
                }
                let password_checks = match a.password_checks {
                    None => 4,
                    Some(0) => {
                        self.problem("server.auth.password_checks", "must be at least 1");
                        4
                    }
                    Some(n) => n,
                };
                Some(ClientAuthConfig {
                    tokens_file: a.tokens_file.as_deref().map(|p| self.path(p)),
                    htpasswd_file: a.htpasswd_file.as_deref().map(|p| self.path(p)),
                    password_checks,
                    failure_limit: a.failure_limit.unwrap_or(10),
                    failure_backoff: self.positive_duration(
                        "server.auth.failure_backoff",
                        a.failure_backoff.as_deref(),
                        Duration::from_secs(60),
                    ),
                })
            }),
        }
    }

    fn cache(&mut self, raw: &raw::RawCache) -> CacheConfig {
        let tag_ttl = self.duration(
            "cache.tag_ttl",
            raw.tag_ttl.as_deref(),
            Duration::from_secs(60),
        );
        let max_stale = self.duration(
            "cache.max_stale",
            raw.max_stale.as_deref(),
            Duration::from_secs(24 * 3600),
        );
        if max_stale < tag_ttl {
            self.problem("cache.max_stale", "must be at least cache.tag_ttl");
        }
        let max_bytes = self.size("cache.max_bytes", raw.max_bytes.as_deref(), 50 << 30);
        CacheConfig {
            dir: self.path(&raw.dir),
            max_bytes,
            max_blob_bytes: self.size(
                "cache.max_blob_bytes",
                raw.max_blob_bytes.as_deref(),
                max_bytes.min(16 << 30),
            ),
            memory_bytes: self.size("cache.memory_bytes", raw.memory_bytes.as_deref(), 256 << 20),
            tag_ttl,
            max_stale,
            verdict_ttl: self.duration(
                "cache.verdict_ttl",
                raw.verdict_ttl.as_deref(),
                Duration::from_secs(600),
            ),
            deny_ttl: self.duration(
                "cache.deny_ttl",
                raw.deny_ttl.as_deref(),
                Duration::from_secs(30),
            ),
        }
    }

    fn upstream(&mut self, i: usize, raw: &raw::RawUpstream) -> Option<UpstreamConfig> {
        let key = |field: &str| format!("upstream[{i}].{field}");
        let name = self.check(&key("name"), raw.name.parse::<UpstreamName>());
        let url = self.check(
            &key("url"),
            reqwest::Url::parse(&raw.url).map_err(|e| format!("`{}` is not a URL: {e}", raw.url)),
        );
        if let Some(url) = &url {
            match url.scheme() {
                "https" => {}
                "http" if raw.insecure => {}
                "http" => self.problem(
                    key("url"),
                    "plain http is refused unless the upstream is marked `insecure = true`",
                ),
                other => self.problem(key("url"), format!("scheme `{other}` is not http(s)")),
            }
            if url.host_str().is_none() || url.path() != "/" || url.query().is_some() {
                self.problem(
                    key("url"),
                    "must be a registry root like https://host[:port]",
                );
            }
        }
        for (j, host) in raw.token_realm_hosts.iter().enumerate() {
            if host.is_empty() || host.contains(['/', ' ', '@']) {
                self.problem(
                    format!("upstream[{i}].token_realm_hosts[{j}]"),
                    "must be a bare host name",
                );
            }
        }
        let library_prefix = raw.library_prefix.unwrap_or(raw.name == "docker.io");
        let connect_timeout = self.duration(
            &key("connect_timeout"),
            raw.connect_timeout.as_deref(),
            Duration::from_secs(10),
        );
        let response_timeout = self.duration(
            &key("response_timeout"),
            raw.response_timeout.as_deref(),
            Duration::from_secs(30),
        );
        let idle_timeout = self.duration(
            &key("idle_timeout"),
            raw.idle_timeout.as_deref(),
            Duration::from_secs(30),
        );
        Some(UpstreamConfig {
            name: name?,
            url: url?,
            ca_file: raw.ca_file.as_deref().map(|p| self.path(p)),
            credentials_file: raw.credentials_file.as_deref().map(|p| self.path(p)),
            token_realm_hosts: raw
                .token_realm_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            library_prefix,
            connect_timeout,
            max_requests: match raw.max_requests {
                Some(0) => {
                    self.problem(key("max_requests"), "must be at least 1");
                    1
                }
                n => n.unwrap_or(64),
            },
            response_timeout,
            idle_timeout,
        })
    }

    /// Authorities naming one TUF repository share its one refresh, its
    /// verified state and its cache, so they must agree on everything that
    /// decides what that refresh trusts and how it runs: the initial `root`,
    /// the `ca_file` and the `refresh` interval (and spell the URL the same
    /// way). Each may have its own `max_stale`. A disagreement is reported
    /// at the later authority's key, naming the earlier one's.
    fn shared_tuf_repositories(&mut self, authorities: &[(usize, AuthorityConfig)]) {
        let mut first: HashMap<String, (usize, &TufSource)> = HashMap::new();
        for (i, a) in authorities {
            let Some(TrustedRootSource::Tuf(t)) = &a.trusted_root else {
                continue;
            };
            let repository = t.url.as_str().trim_end_matches('/').to_string();
            let Some((j, f)) = first.get(&repository).copied() else {
                first.insert(repository, (*i, t));
                continue;
            };
            for (field, same) in [
                ("tuf", f.url == t.url),
                ("root", f.root == t.root),
                ("ca_file", f.ca_file == t.ca_file),
                ("refresh", f.refresh == t.refresh),
            ] {
                if !same {
                    self.problem(
                        format!("authority[{i}].trusted_root.{field}"),
                        format!(
                            "differs from authority[{j}].trusted_root.{field}, which names the same TUF repository: \
                             authorities sharing a repository share its refresh, so `tuf`, `root`, `ca_file` and `refresh` must be the same"
                        ),
                    );
                }
            }
        }
    }

    fn authority(
        &mut self,
        i: usize,
        raw: &raw::RawAuthority,
        cache_dir: &Path,
    ) -> Option<AuthorityConfig> {
        let key = |field: &str| format!("authority[{i}].{field}");
        if raw.name.is_empty() {
            self.problem(key("name"), "must not be empty");
        }
        if raw.name.starts_with("tuf:") {
            // Trust fetched for TUF repositories is kept under `tuf:<url>`.
            self.problem(key("name"), "must not start with `tuf:`");
        }
        let kinds = usize::from(!raw.keys.is_empty())
            + usize::from(!raw.ca_roots.is_empty())
            + usize::from(raw.keyless.is_some())
            + usize::from(raw.source.is_some());
        if kinds != 1 {
            self.problem(
                key("keys"),
                "an authority has exactly one of `keys`, `ca_roots`, `keyless` or `source`",
            );
            return None;
        }
        for (j, r) in raw.revoked.iter().enumerate() {
            if r.len() != 64 || !r.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.problem(
                    format!("authority[{i}].revoked[{j}]"),
                    "must be the SHA-256 fingerprint (64 hex digits) of a key's SPKI or a CA certificate",
                );
            }
        }
        for (j, s) in raw.revoked_serials.iter().enumerate() {
            if crate::material::normalize_serial(s).is_none() {
                self.problem(
                    format!("authority[{i}].revoked_serials[{j}]"),
                    "must be a certificate serial number in hex (colons allowed), as `openssl x509 -serial` prints it",
                );
            }
        }
        if !raw.revoked_serials.is_empty() && !raw.keys.is_empty() {
            self.problem(
                key("revoked_serials"),
                "revoked_serials apply to certificates; a `keys` authority revokes keys with `revoked`",
            );
        }
        let kind = if let Some(src) = &raw.source {
            let skey = |f: &str| key(&format!("source.{f}"));
            let url = self.check(
                &skey("url"),
                reqwest::Url::parse(&src.url)
                    .map_err(|e| format!("`{}` is not a URL: {e}", src.url))
                    .and_then(|u| {
                        if u.scheme() == "https" {
                            Ok(u)
                        } else {
                            Err("trust material is fetched over https only".into())
                        }
                    }),
            )?;
            let kind = match src.kind.as_deref() {
                None | Some("keys") => SourceKind::Keys,
                Some("ca_roots") => SourceKind::CaRoots,
                Some(other) => {
                    self.problem(
                        skey("kind"),
                        format!("`{other}` is not \"keys\" or \"ca_roots\""),
                    );
                    SourceKind::Keys
                }
            };
            AuthorityKind::Source(SourceConfig {
                url,
                kind,
                refresh: self.duration(
                    &skey("refresh"),
                    src.refresh.as_deref(),
                    Duration::from_secs(3600),
                ),
                max_stale: self.duration(
                    &skey("max_stale"),
                    src.max_stale.as_deref(),
                    Duration::from_secs(72 * 3600),
                ),
                ca_file: src.ca_file.as_deref().map(|p| self.path(p)),
                max_bytes: self.size(&skey("max_bytes"), src.max_bytes.as_deref(), 1 << 20),
                signed_by: src.signed_by.as_deref().map(|p| self.path(p)),
            })
        } else if !raw.keys.is_empty() {
            AuthorityKind::Keys(raw.keys.iter().map(|p| self.pem(p)).collect())
        } else if !raw.ca_roots.is_empty() {
            AuthorityKind::CaRoots(raw.ca_roots.iter().map(|p| self.pem(p)).collect())
        } else {
            let k = raw.keyless.as_ref()?;
            let subject = match (&k.subject, &k.subject_regex) {
                (Some(s), None) => SubjectMatch::Exact(s.clone()),
                (None, Some(r)) => {
                    self.check(&key("keyless.subject_regex"), SubjectMatch::regex(r))?
                }
                _ => {
                    self.problem(
                        key("keyless"),
                        "give exactly one of `subject` or `subject_regex`",
                    );
                    return None;
                }
            };
            if k.issuer.is_empty() {
                self.problem(key("keyless.issuer"), "must not be empty");
            }
            AuthorityKind::Keyless {
                issuer: k.issuer.clone(),
                subject,
            }
        };
        let trusted_root = match &raw.trusted_root {
            None => None,
            Some(raw::RawTrustedRoot::Named(t)) if t == "sigstore-public-good" => {
                Some(TrustedRootSource::PublicGood)
            }
            Some(raw::RawTrustedRoot::Named(path)) => {
                Some(TrustedRootSource::File(self.path(path)))
            }
            Some(raw::RawTrustedRoot::Tuf(t)) => self
                .tuf(&key("trusted_root"), t, cache_dir)
                .map(TrustedRootSource::Tuf),
        };
        let keyless = matches!(kind, AuthorityKind::Keyless { .. });
        let require_tlog = raw.require_tlog.unwrap_or(keyless);
        if (keyless || require_tlog) && trusted_root.is_none() {
            self.problem(
                key("trusted_root"),
                "keyless authorities and `require_tlog = true` need a trusted root (\"sigstore-public-good\" or a trusted_root.json path)",
            );
        }
        let require_code_signing_eku = raw.require_code_signing_eku.unwrap_or(false);
        let pki = matches!(kind, AuthorityKind::CaRoots(_))
            || matches!(&kind, AuthorityKind::Source(s) if s.kind == SourceKind::CaRoots);
        if raw.require_code_signing_eku.is_some() && !pki {
            self.problem(
                key("require_code_signing_eku"),
                "applies to certificates of a vendor PKI: a `ca_roots` authority or a `ca_roots` source",
            );
        }
        Some(AuthorityConfig {
            name: raw.name.clone(),
            kind,
            trusted_root,
            require_tlog,
            require_sct: raw.require_sct.unwrap_or(true),
            require_code_signing_eku,
            revoked: raw.revoked.iter().map(|r| r.to_ascii_lowercase()).collect(),
            revoked_serials: raw
                .revoked_serials
                .iter()
                .filter_map(|s| crate::material::normalize_serial(s))
                .collect(),
        })
    }

    fn require(&mut self, path: &str, raw: Option<&raw::RawRequire>, listed: usize) -> Require {
        let require = match raw {
            None => Require::Any,
            Some(raw::RawRequire::Word(w)) if w == "any" => Require::Any,
            Some(raw::RawRequire::Word(w)) if w == "all" => Require::All,
            Some(raw::RawRequire::Count(n)) if *n >= 1 => {
                Require::AtLeast(usize::try_from(*n).unwrap_or(usize::MAX))
            }
            Some(_) => {
                self.problem(
                    path,
                    "must be \"any\", \"all\" or a number of authorities (at least 1)",
                );
                Require::Any
            }
        };
        if require.needed(listed) > listed {
            self.problem(
                path,
                format!(
                    "requires {} authorities but only {listed} are listed",
                    require.needed(listed)
                ),
            );
        }
        require
    }

    /// `[[condition]]`s by name, each compiled once (`None`: it did not
    /// compile, and that is already reported).
    fn conditions(&mut self, raw: &[raw::RawCondition]) -> HashMap<String, Option<Condition>> {
        let mut out = HashMap::new();
        for (i, c) in raw.iter().enumerate() {
            if c.name.is_empty() {
                self.problem(format!("condition[{i}].name"), "must not be empty");
            }
            let compiled = self.check(
                &format!("condition[{i}].expr"),
                Condition::compile(&c.name, &c.expr),
            );
            if out.contains_key(&c.name) {
                self.problem(
                    format!("condition[{i}].name"),
                    format!("`{}` is used twice", c.name),
                );
            } else {
                out.insert(c.name.clone(), compiled);
            }
        }
        out
    }

    fn exceptions(&mut self, raw: &[raw::RawException]) -> Vec<Exception> {
        let mut out = Vec::new();
        for (i, e) in raw.iter().enumerate() {
            let key = |field: &str| format!("exception[{i}].{field}");
            let pattern = self.check(&key("match"), e.pattern.parse::<Glob>());
            let digest = match &e.digest {
                None => Some(None),
                Some(d) => self
                    .check(
                        &key("digest"),
                        d.parse::<crate::oci::Digest>()
                            .map_err(|_| format!("`{d}` is not a digest like \"sha256:<64 hex>\"")),
                    )
                    .map(Some),
            };
            let expires = self.check(
                &key("expires"),
                humantime::parse_rfc3339_weak(&e.expires).map_err(|_| {
                    format!(
                        "`{}` is not a time like \"2026-12-31T00:00:00Z\"",
                        e.expires
                    )
                }),
            );
            for (field, value) in [("ticket", &e.ticket), ("reason", &e.reason)] {
                if value.trim().is_empty() {
                    self.problem(key(field), "must not be empty: an exception is justified");
                }
            }
            if let (Some(pattern), Some(digest), Some(expires)) = (pattern, digest, expires) {
                out.push(Exception {
                    name: e.name.clone().unwrap_or_else(|| e.ticket.clone()),
                    pattern,
                    digest,
                    expires,
                    ticket: e.ticket.clone(),
                    reason: e.reason.clone(),
                });
            }
        }
        out
    }

    fn authority_names(&mut self, path: &str, listed: &[String], known: &HashSet<String>) {
        let mut seen = HashSet::new();
        for (j, a) in listed.iter().enumerate() {
            if !known.contains(a) {
                self.problem(
                    format!("{path}[{j}]"),
                    format!("`{a}` is not the name of any [[authority]]"),
                );
            } else if !seen.insert(a.as_str()) {
                self.problem(
                    format!("{path}[{j}]"),
                    format!("`{a}` is listed twice; a threshold counts distinct authorities"),
                );
            }
        }
        if listed.is_empty() {
            self.problem(path, "needs at least one authority");
        }
    }

    fn attestations(
        &mut self,
        i: usize,
        raw: &[raw::RawAttestation],
        authorities: &HashSet<String>,
        conditions: &HashMap<String, Option<Condition>>,
    ) -> Vec<AttestationRequirement> {
        let mut out = Vec::new();
        for (j, a) in raw.iter().enumerate() {
            let key = |field: &str| format!("policy[{i}].attestations[{j}].{field}");
            if a.predicate_type.is_empty() {
                self.problem(key("predicate_type"), "must not be empty");
            }
            self.authority_names(&key("authorities"), &a.authorities, authorities);
            let require = self.require(&key("require"), a.require.as_ref(), a.authorities.len());
            let condition = match &a.condition {
                None => None,
                Some(name) => match conditions.get(name) {
                    Some(c) => c.clone(),
                    // Not a [[condition]] name: an inline CEL expression.
                    None => {
                        let label = a.name.clone().unwrap_or_else(|| a.predicate_type.clone());
                        self.check(
                            &key("condition"),
                            Condition::compile(&label, name).map_err(|e| {
                                format!("is neither the name of a [[condition]] nor a valid condition: it {e}")
                            }),
                        )
                    }
                },
            };
            let max_age = a
                .max_age
                .as_deref()
                .and_then(|m| self.check(&key("max_age"), parse_duration(m)));
            out.push(AttestationRequirement {
                name: a.name.clone().unwrap_or_else(|| a.predicate_type.clone()),
                predicate_type: a.predicate_type.clone(),
                authorities: a.authorities.clone(),
                require,
                condition,
                max_age,
            });
        }
        out
    }

    fn policies(
        &mut self,
        raw: &[raw::RawPolicy],
        authorities: &HashSet<String>,
        conditions: &HashMap<String, Option<Condition>>,
    ) -> PolicySet {
        let mut policies = Vec::new();
        for (i, p) in raw.iter().enumerate() {
            let key = |field: &str| format!("policy[{i}].{field}");
            let patterns: Vec<Glob> = p
                .patterns
                .iter()
                .enumerate()
                .filter_map(|(j, g)| {
                    self.check(&format!("policy[{i}].match[{j}]"), g.parse::<Glob>())
                })
                .collect();
            if p.patterns.is_empty() {
                self.problem(key("match"), "needs at least one pattern");
            }
            let mode = match p.mode.as_deref() {
                None | Some("enforce") => Mode::Enforce,
                Some("audit") => Mode::Audit,
                Some(other) => {
                    self.problem(
                        key("mode"),
                        format!("`{other}` is not \"enforce\" or \"audit\""),
                    );
                    Mode::Enforce
                }
            };
            let chosen = usize::from(p.deny)
                + usize::from(p.allow_unverified)
                + usize::from(p.signatures.is_some());
            if chosen != 1 {
                self.problem(
                    key("signatures"),
                    "a policy needs exactly one of `signatures = {…}`, `deny = true` or `allow_unverified = true`",
                );
            }
            let rule = match (&p.signatures, p.deny, p.allow_unverified) {
                (Some(sig), _, _) => {
                    self.authority_names(
                        &key("signatures.authorities"),
                        &sig.authorities,
                        authorities,
                    );
                    let require = self.require(
                        &key("signatures.require"),
                        sig.require.as_ref(),
                        sig.authorities.len(),
                    );
                    Rule::Signatures {
                        authorities: sig.authorities.clone(),
                        require,
                        require_child_signatures: p.require_child_signatures,
                    }
                }
                (None, false, true) => Rule::AllowUnverified,
                _ => Rule::Deny,
            };
            if !p.attestations.is_empty() && p.signatures.is_none() {
                self.problem(
                    key("attestations"),
                    "attestations are required on top of `signatures = {…}`; add a signatures requirement",
                );
            }
            let attestations = self.attestations(i, &p.attestations, authorities, conditions);
            let trust_unavailable_allows = match p.on_trust_unavailable.as_deref() {
                None | Some("deny") => false,
                Some("allow") => true,
                Some(other) => {
                    self.problem(
                        key("on_trust_unavailable"),
                        format!("`{other}` is not \"deny\" or \"allow\""),
                    );
                    false
                }
            };
            policies.push(Policy {
                name: p.name.clone(),
                patterns,
                mode,
                rule,
                attestations,
                trust_unavailable_allows,
            });
        }
        PolicySet::new(policies)
    }
}

#[cfg(test)]
mod tests;
