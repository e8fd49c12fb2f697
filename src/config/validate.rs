//! Building the validated [`Config`] from the raw TOML: every section is
//! checked, each problem recorded with its key path, and all of them
//! reported at once. Authorities are checked in [`super::authorities`],
//! policies, conditions and exceptions in [`super::policies`].

use super::*;

/// Collects problems while building the validated config.
pub(super) struct Validator<'a> {
    pub(super) base: &'a Path,
    pub(super) problems: Vec<Problem>,
}

impl<'a> Validator<'a> {
    pub(super) fn new(base: &'a Path) -> Self {
        Validator {
            base,
            problems: Vec::new(),
        }
    }

    pub(super) fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn check<T, E: std::fmt::Display>(
        &mut self,
        path: &str,
        r: Result<T, E>,
    ) -> Option<T> {
        r.map_err(|m| self.problem(path, m.to_string())).ok()
    }

    pub(super) fn duration(&mut self, path: &str, v: Option<&str>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => self.check(path, parse_duration(s)).unwrap_or(default),
        }
    }

    /// A duration that must not be zero (a zero timeout would close
    /// everything at once).
    pub(super) fn positive_duration(
        &mut self,
        path: &str,
        v: Option<&str>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(path, v, default);
        if d.is_zero() {
            self.problem(path, "must be longer than zero");
            return default;
        }
        d
    }

    pub(super) fn size(&mut self, path: &str, v: Option<&str>, default: u64) -> u64 {
        match v {
            None => default,
            Some(s) => self.check(path, parse_size(s)).unwrap_or(default),
        }
    }

    /// `admin.peers`: at most [`MAX_PEERS`] addresses, each once.
    pub(super) fn peers(&mut self, raw: &[String]) -> Vec<PeerAddress> {
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

    pub(super) fn addr(&mut self, path: &str, s: &str) -> SocketAddr {
        let parsed = s
            .parse()
            .map_err(|_| format!("`{s}` is not an address like \"127.0.0.1:5000\""));
        self.check(path, parsed)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// A PEM file path (relative to the config), or PEM text itself.
    pub(super) fn pem(&self, s: &str) -> Pem {
        if s.trim_start().starts_with("-----BEGIN") {
            Pem::Inline(s.to_string())
        } else {
            Pem::File(self.path(s))
        }
    }

    pub(super) fn path(&self, s: &str) -> PathBuf {
        self.base.join(s)
    }

    /// The config, or every problem in it with the authorities that were valid.
    pub(super) fn config(mut self, raw: RawConfig) -> Result<Config, super::Invalid> {
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
            denials: raw.audit.as_ref().and_then(|a| a.denials).unwrap_or(10_000),
        };
        let cache = self.cache(&raw.cache);
        let cluster = raw.cluster.as_ref().map(|c| self.cluster(c));
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
        let conditions = self.conditions(&raw.conditions);
        let exceptions = self.exceptions(&raw.exceptions);
        // Who a request is: a token or password (server.auth), else a
        // client certificate (server.client_ca).
        let mtls = server.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        let identified = (server.auth.is_some(), mtls);
        let clients = self.clients(&raw.clients, identified);
        let policies = self
            .policies(&raw.policies, &names, &conditions)
            .with_exceptions(exceptions)
            .with_clients(clients);
        if self.problems.is_empty() {
            Ok(Config {
                server,
                admin,
                cache,
                limits,
                upstreams,
                authorities: authorities.into_iter().map(|(_, a)| a).collect(),
                policies,
                audit,
                cluster,
                source_file: None,
                source_digest: None,
            })
        } else {
            Err((self.problems, authorities))
        }
    }

    pub(super) fn limits(&mut self, raw: &raw::RawLimits) -> LimitsConfig {
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

    pub(super) fn server(
        &mut self,
        raw: &raw::RawServer,
        names: &HashSet<UpstreamName>,
    ) -> ServerConfig {
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

    pub(super) fn cache(&mut self, raw: &raw::RawCache) -> CacheConfig {
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
            s3: self.store(raw),
        }
    }

    /// `cache.store` and, for `"s3"`, `[cache.s3]`.
    fn store(&mut self, raw: &raw::RawCache) -> Option<S3Config> {
        match (raw.store.as_deref(), &raw.s3) {
            (None | Some("disk"), None) => None,
            (None | Some("disk"), Some(_)) => {
                self.problem("cache.s3", "is set, but cache.store is not \"s3\"");
                None
            }
            (Some("s3"), None) => {
                self.problem("cache.s3", "is required when cache.store = \"s3\"");
                None
            }
            (Some("s3"), Some(s3)) => self.s3(s3),
            (Some(other), _) => {
                self.problem(
                    "cache.store",
                    format!("`{other}` is not a store; use \"disk\" or \"s3\""),
                );
                None
            }
        }
    }

    fn s3(&mut self, raw: &raw::RawS3) -> Option<S3Config> {
        if raw.bucket.is_empty() || raw.bucket.contains(['/', ' ']) {
            self.problem("cache.s3.bucket", "must be a bucket name");
        }
        let prefix = raw.prefix.clone().unwrap_or_default();
        if prefix.starts_with('/') || (!prefix.is_empty() && !prefix.ends_with('/')) {
            self.problem(
                "cache.s3.prefix",
                "must be empty or like \"portcullis/\" (no leading slash, one trailing)",
            );
        }
        let endpoint = raw.endpoint.as_deref().and_then(|e| {
            let url = reqwest::Url::parse(e)
                .map_err(|err| format!("`{e}` is not a URL: {err}"))
                .and_then(|u| match u.scheme() {
                    "http" | "https" if u.host_str().is_some() => Ok(u),
                    _ => Err(format!("`{e}` is not an http(s) URL with a host")),
                });
            self.check("cache.s3.endpoint", url)
        });
        let uploads = raw.uploads.unwrap_or(4);
        if uploads == 0 {
            self.problem("cache.s3.uploads", "must be at least 1");
        }
        Some(S3Config {
            bucket: raw.bucket.clone(),
            prefix,
            path_style: raw.path_style.unwrap_or(raw.endpoint.is_some()),
            endpoint,
            region: raw.region.clone().unwrap_or_else(|| "us-east-1".into()),
            access_key_id_file: self.path(&raw.access_key_id_file),
            secret_access_key_file: self.path(&raw.secret_access_key_file),
            timeout: self.positive_duration(
                "cache.s3.timeout",
                raw.timeout.as_deref(),
                Duration::from_secs(30),
            ),
            uploads: uploads.max(1),
        })
    }

    pub(super) fn cluster(&mut self, raw: &raw::RawCluster) -> ClusterConfig {
        if !(raw.redis.starts_with("redis://") || raw.redis.starts_with("rediss://")) {
            // The URL may hold a password: name the key, not the value.
            self.problem(
                "cluster.redis",
                "must be a redis:// or rediss:// URL (put the password in cluster.password_file)",
            );
        }
        let lease_ttl = self.positive_duration(
            "cluster.lease_ttl",
            raw.lease_ttl.as_deref(),
            Duration::from_secs(15),
        );
        if lease_ttl < Duration::from_secs(1) {
            self.problem(
                "cluster.lease_ttl",
                "must be at least 1s (it is renewed every third of it)",
            );
        }
        let lease_wait = self.positive_duration(
            "cluster.lease_wait",
            raw.lease_wait.as_deref(),
            Duration::from_secs(60),
        );
        ClusterConfig {
            redis: raw.redis.clone(),
            password_file: raw.password_file.as_deref().map(|p| self.path(p)),
            secret_file: self.path(&raw.secret_file),
            lease_ttl,
            lease_wait,
            timeout: self.positive_duration(
                "cluster.timeout",
                raw.timeout.as_deref(),
                Duration::from_millis(500),
            ),
        }
    }

    pub(super) fn upstream(&mut self, i: usize, raw: &raw::RawUpstream) -> Option<UpstreamConfig> {
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
        let credential_helper = match (&raw.credential_helper, &raw.credentials_file) {
            (Some(_), Some(_)) => {
                self.problem(
                    key("credential_helper"),
                    "give credentials_file or credential_helper, not both",
                );
                None
            }
            (Some(h), None) if h.is_empty() || h.chars().any(char::is_whitespace) => {
                self.problem(
                    key("credential_helper"),
                    "a helper name like \"ecr-login\" (runs docker-credential-ecr-login) or a path",
                );
                None
            }
            (Some(h), None) if h.contains('/') => Some(self.path(h).display().to_string()),
            (Some(h), None) => Some(format!("docker-credential-{h}")),
            (None, _) => None,
        };
        let credential_helper_ttl = self.duration(
            &key("credential_helper_ttl"),
            raw.credential_helper_ttl.as_deref(),
            Duration::from_secs(600),
        );
        Some(UpstreamConfig {
            name: name?,
            url: url?,
            ca_file: raw.ca_file.as_deref().map(|p| self.path(p)),
            credentials_file: raw.credentials_file.as_deref().map(|p| self.path(p)),
            credential_helper,
            credential_helper_ttl,
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
}
