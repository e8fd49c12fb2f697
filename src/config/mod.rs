//! Configuration: the TOML file ([`raw`]) and the validated [`Config`] built
//! from it. Validation reports every problem at once, each with its key path.

mod authorities;
mod policies;
pub mod raw;
mod units;
mod validate;

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
use validate::Validator;

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
    pub cluster: Option<ClusterConfig>,
    /// The file this config was read from (what a reload re-reads).
    pub source_file: Option<PathBuf>,
    /// SHA-256 of the text that was parsed from it.
    pub source_digest: Option<[u8; 32]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub sink: crate::audit::Sink,
    /// Events queued for the sink before new ones are dropped (and counted).
    pub queue: usize,
    /// References being denied that `/admin/denials` holds at most.
    pub denials: u64,
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
    /// The bucket replicas share content in (`store = "s3"`); the local
    /// store is then a first-level cache in front of it.
    pub s3: Option<S3Config>,
}

/// `[cache.s3]`: an S3-compatible bucket for content shared by replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Prepended to every object name (empty, or ending in `/`).
    pub prefix: String,
    /// Self-hosted stores (Garage, MinIO, Ceph); AWS when absent.
    pub endpoint: Option<reqwest::Url>,
    pub region: String,
    /// Files re-read when they change (rotation without a restart).
    pub access_key_id_file: PathBuf,
    pub secret_access_key_file: PathBuf,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`.
    pub path_style: bool,
    /// One request to the store, at most.
    pub timeout: Duration,
    /// Uploads in flight at once; a verified object that finds no slot
    /// stays local only (counted).
    pub uploads: usize,
}

/// `[cluster]`: coordination between replicas in Redis or Valkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://host:port/db` (or `rediss://` for TLS).
    pub redis: String,
    pub password_file: Option<PathBuf>,
    /// The key every replica authenticates entries with (HMAC-SHA256).
    pub secret_file: PathBuf,
    /// A lease its holder stops renewing expires after this.
    pub lease_ttl: Duration,
    /// The longest a request waits for another replica's work.
    pub lease_wait: Duration,
    /// One Redis command, at most; past it the replica works alone.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: UpstreamName,
    pub url: reqwest::Url,
    pub ca_file: Option<PathBuf>,
    pub credentials_file: Option<PathBuf>,
    /// A docker credential helper: `docker-credential-<name>` or a path.
    pub credential_helper: Option<String>,
    /// How long a helper's answer is used before it is asked again.
    pub credential_helper_ttl: Duration,
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
    /// The authorities that were valid, each with its index in the file,
    /// so that `check-config` can check their trust material too.
    pub authorities: Vec<(usize, AuthorityConfig)>,
}

/// At most this many unknown keys are reported (each costs a re-read).
const MAX_UNKNOWN_KEYS: usize = 64;

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
            authorities: Vec::new(),
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail("(file)", e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config =
            Config::checked_toml(&text, base).map_err(|(problems, authorities)| ConfigError {
                file: path.to_path_buf(),
                problems,
                authorities,
            })?;
        config.source_file = Some(path.to_path_buf());
        config.source_digest = Some(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()).into());
        Ok(config)
    }

    /// Parses and validates TOML text; `base` anchors relative paths.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, Vec<Problem>> {
        Config::checked_toml(text, base).map_err(|(problems, _)| problems)
    }

    /// As [`Config::from_toml`]; a failure also gives the authorities
    /// that were valid. Unknown keys do not hide the rest: each is
    /// reported, left out, and the file read again, so that a typo is
    /// listed with the other keys' problems. A value of the wrong type or
    /// a syntax error ends the reading there.
    fn checked_toml(text: &str, base: &Path) -> Result<Config, Invalid> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| (vec![parse_problem("(syntax)".into(), text, &e)], Vec::new()))?;
        let e = match serde_path_to_error::deserialize::<_, RawConfig>(de) {
            Ok(raw) => return Validator::new(base).config(raw),
            Err(e) => e,
        };
        let mut problems = vec![parse_problem(e.path().to_string(), text, e.inner())];
        let mut table: toml::Table = match text.parse() {
            Ok(table) if unknown_key(&e) => table,
            _ => return Err((problems, Vec::new())),
        };
        let mut removed = remove_key(&mut table, e.path());
        while removed && problems.len() < MAX_UNKNOWN_KEYS {
            let value = toml::Value::Table(table.clone());
            match serde_path_to_error::deserialize::<_, RawConfig>(value) {
                Ok(raw) => {
                    let mut validator = Validator::new(base);
                    validator.problems = problems;
                    return validator.config(raw);
                }
                Err(e) => {
                    problems.push(parse_problem(e.path().to_string(), text, e.inner()));
                    removed = unknown_key(&e) && remove_key(&mut table, e.path());
                }
            }
        }
        Err((problems, Vec::new()))
    }
}

/// Why a config is invalid, and the authorities in it that were valid.
type Invalid = (Vec<Problem>, Vec<(usize, AuthorityConfig)>);

fn unknown_key(e: &serde_path_to_error::Error<toml::de::Error>) -> bool {
    e.inner().message().starts_with("unknown field")
}

/// Removes the key `path` names (the unknown key an error is about);
/// false when the path leads nowhere in `table`.
fn remove_key(table: &mut toml::Table, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    fn remove(value: &mut toml::Value, segments: &[&Segment]) -> bool {
        match (segments, value) {
            ([Segment::Map { key }], toml::Value::Table(t)) => t.remove(key.as_str()).is_some(),
            ([Segment::Map { key }, rest @ ..], toml::Value::Table(t)) => {
                t.get_mut(key.as_str()).is_some_and(|v| remove(v, rest))
            }
            ([Segment::Seq { index }, rest @ ..], toml::Value::Array(items)) => {
                items.get_mut(*index).is_some_and(|v| remove(v, rest))
            }
            _ => false,
        }
    }
    let segments: Vec<&Segment> = path.iter().collect();
    let mut root = toml::Value::Table(std::mem::take(table));
    let removed = remove(&mut root, &segments);
    if let toml::Value::Table(t) = root {
        *table = t;
    }
    removed
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

#[cfg(test)]
mod tests;
