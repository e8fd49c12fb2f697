//! The configuration file as written: every field a string or plain value,
//! unknown keys refused. Meaning is checked in [`super::Config::try_from`].

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    pub cache: RawCache,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub audit: Option<RawAudit>,
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<RawUpstream>,
    #[serde(default, rename = "authority")]
    pub authorities: Vec<RawAuthority>,
    #[serde(default, rename = "policy")]
    pub policies: Vec<RawPolicy>,
    #[serde(default, rename = "condition")]
    pub conditions: Vec<RawCondition>,
    #[serde(default, rename = "exception")]
    pub exceptions: Vec<RawException>,
    #[serde(default, rename = "client")]
    pub clients: Vec<RawClient>,
    #[serde(default)]
    pub cluster: Option<RawCluster>,
}

/// `[[client]]`: the repositories one client identity may pull.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub identity: String,
    pub repositories: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub redis: String,
    #[serde(default)]
    pub password_file: Option<String>,
    pub secret_file: String,
    #[serde(default)]
    pub lease_ttl: Option<String>,
    #[serde(default)]
    pub lease_wait: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3 {
    pub bucket: String,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    pub access_key_id_file: String,
    pub secret_access_key_file: String,
    #[serde(default)]
    pub path_style: Option<bool>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub uploads: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawException {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub pattern: String,
    #[serde(default)]
    pub digest: Option<String>,
    pub expires: String,
    pub ticket: String,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    pub name: String,
    pub expr: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttestation {
    #[serde(default)]
    pub name: Option<String>,
    pub predicate_type: String,
    pub authorities: Vec<String>,
    #[serde(default)]
    pub require: Option<RawRequire>,
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub max_age: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthority {
    pub name: String,
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub ca_roots: Vec<String>,
    #[serde(default)]
    pub keyless: Option<RawKeyless>,
    #[serde(default)]
    pub trusted_root: Option<RawTrustedRoot>,
    #[serde(default)]
    pub require_tlog: Option<bool>,
    #[serde(default)]
    pub require_sct: Option<bool>,
    #[serde(default)]
    pub require_code_signing_eku: Option<bool>,
    #[serde(default)]
    pub source: Option<RawSource>,
    #[serde(default)]
    pub revoked: Vec<String>,
    #[serde(default)]
    pub revoked_serials: Vec<String>,
}

/// `"sigstore-public-good"`, a path, or `{ tuf = URL, ... }`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "\"sigstore-public-good\", a trusted_root.json path, or { tuf = \"https://…\", root, refresh, max_stale, ca_file }"
)]
pub enum RawTrustedRoot {
    Named(String),
    Tuf(RawTuf),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTuf {
    pub tuf: String,
    #[serde(default)]
    pub root: Option<String>,
    #[serde(default)]
    pub refresh: Option<String>,
    #[serde(default)]
    pub max_stale: Option<String>,
    #[serde(default)]
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub url: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub refresh: Option<String>,
    #[serde(default)]
    pub max_stale: Option<String>,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub max_bytes: Option<String>,
    #[serde(default)]
    pub signed_by: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyless {
    pub issuer: String,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub subject_regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignatures {
    pub authorities: Vec<String>,
    #[serde(default)]
    pub require: Option<RawRequire>,
}

/// `"any"`, `"all"` or a number of distinct authorities.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRequire {
    Word(String),
    Count(i64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: String,
    #[serde(default)]
    pub default_upstream: Option<String>,
    #[serde(default)]
    pub header_read_timeout: Option<String>,
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub idle_timeout: Option<String>,
    #[serde(default)]
    pub send_timeout: Option<String>,
    #[serde(default)]
    pub max_streams_per_connection: Option<u32>,
    #[serde(default)]
    pub keepalive_interval: Option<String>,
    #[serde(default)]
    pub tls_cert: Option<String>,
    #[serde(default)]
    pub tls_key: Option<String>,
    #[serde(default)]
    pub client_ca: Option<String>,
    #[serde(default)]
    pub auth: Option<RawClientAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientAuth {
    #[serde(default)]
    pub tokens_file: Option<String>,
    #[serde(default)]
    pub htpasswd_file: Option<String>,
    #[serde(default)]
    pub password_checks: Option<usize>,
    #[serde(default)]
    pub failure_limit: Option<u32>,
    #[serde(default)]
    pub failure_backoff: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    #[serde(default)]
    pub token_file: Option<String>,
    #[serde(default)]
    pub peers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    #[serde(default)]
    pub sink: Option<String>,
    #[serde(default)]
    pub queue: Option<usize>,
    #[serde(default)]
    pub denials: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub decisions: Option<usize>,
    #[serde(default)]
    pub decision_bytes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub dir: String,
    #[serde(default)]
    pub max_bytes: Option<String>,
    #[serde(default)]
    pub max_blob_bytes: Option<String>,
    #[serde(default)]
    pub memory_bytes: Option<String>,
    #[serde(default)]
    pub tag_ttl: Option<String>,
    #[serde(default)]
    pub max_stale: Option<String>,
    #[serde(default)]
    pub verdict_ttl: Option<String>,
    #[serde(default)]
    pub deny_ttl: Option<String>,
    #[serde(default)]
    pub store: Option<String>,
    #[serde(default)]
    pub s3: Option<RawS3>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub credentials_file: Option<String>,
    #[serde(default)]
    pub credential_helper: Option<String>,
    #[serde(default)]
    pub credential_helper_ttl: Option<String>,
    #[serde(default)]
    pub token_realm_hosts: Vec<String>,
    #[serde(default)]
    pub library_prefix: Option<bool>,
    #[serde(default)]
    pub connect_timeout: Option<String>,
    #[serde(default)]
    pub response_timeout: Option<String>,
    #[serde(default)]
    pub idle_timeout: Option<String>,
    #[serde(default)]
    pub max_requests: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub name: String,
    #[serde(rename = "match")]
    pub patterns: Vec<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub deny: bool,
    #[serde(default)]
    pub allow_unverified: bool,
    #[serde(default)]
    pub signatures: Option<RawSignatures>,
    #[serde(default)]
    pub require_child_signatures: bool,
    #[serde(default)]
    pub attestations: Vec<RawAttestation>,
    #[serde(default)]
    pub on_trust_unavailable: Option<String>,
}
