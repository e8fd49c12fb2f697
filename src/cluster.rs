//! Coordination between replicas in Redis or Valkey (decision 0013): tag
//! mappings, references (which manifests of a repository name a blob or a
//! child manifest), and leases that let one replica do a piece of work
//! while the others wait for its result.
//!
//! Every entry carries an HMAC-SHA256 over its key and value under the
//! secret all replicas share; an entry that fails it is ignored (and
//! counted). Nothing read here is a permission: a tag names a digest that is
//! then fetched, checked and decided; a reference names a manifest the
//! replica decides itself, and only what that manifest names is granted.
//! Every command is bounded by `cluster.timeout`; when Redis fails the
//! replica works alone.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use redis::aio::ConnectionManager;

use crate::config::ClusterConfig;
use crate::metrics::{ClusterOp, Found, LeaseWait, Metrics};
use crate::oci::{Digest, RepositoryName, Tag, UpstreamName};

/// References kept per subject: the most recent grantors.
const MAX_REFERENCES: isize = 8;

/// How long references live without being written again.
const REFERENCE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The shortest secret accepted (bytes).
const MIN_SECRET: usize = 32;

const PREFIX: &str = "portcullis:";

/// What discovery found at a tag where there was nothing.
const ABSENT: &str = "-";

/// How far another replica's clock may be behind this one's when its lease
/// says until when it holds.
const CLOCK_SKEW_MS: u64 = 5_000;

/// What a reference names: a blob of an image, or a manifest of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Blob,
    Child,
}

impl Subject {
    fn as_str(self) -> &'static str {
        match self {
            Subject::Blob => "blob",
            Subject::Child => "child",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cluster: {0}")]
pub struct SetupError(String);

pub struct Cluster {
    redis: ConnectionManager,
    key: hmac::Key,
    /// This process, as a lease holder.
    holder: String,
    lease_ttl: Duration,
    lease_wait: Duration,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

/// Releases a lease if it is still ours; renews only ours.
/// Both match a lease by its owner (`ARGV[1]`, the `holder.nonce@` its
/// value starts with), so a renewal whose answer was lost changes nothing.
const RELEASE: &str = "local v = redis.call('get', KEYS[1]) if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
const RENEW: &str = "local v = redis.call('get', KEYS[1]) if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 else return 0 end";

impl Cluster {
    /// A client for Redis; it connects on first use and again after a
    /// failure, so Redis being down at start-up only makes this replica
    /// work alone until it is back.
    pub fn new(
        settings: &ClusterConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Cluster>, SetupError> {
        let secret = std::fs::read(&settings.secret_file).map_err(|e| {
            SetupError(format!(
                "cannot read secret_file ({}): {e}",
                settings.secret_file.display()
            ))
        })?;
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET {
            return Err(SetupError(format!(
                "secret_file holds {} bytes; at least {MIN_SECRET} are needed",
                secret.len()
            )));
        }
        use redis::IntoConnectionInfo;
        let mut info = settings
            .redis
            .as_str()
            .into_connection_info()
            .map_err(|_| SetupError("redis is not a valid redis:// URL".into()))?;
        if let Some(file) = &settings.password_file {
            let password = std::fs::read_to_string(file).map_err(|e| {
                SetupError(format!(
                    "cannot read password_file ({}): {e}",
                    file.display()
                ))
            })?;
            let redis = info.redis_settings().clone().set_password(password.trim());
            info = info.set_redis_settings(redis);
        }
        let client = redis::Client::open(info).map_err(|e| SetupError(e.to_string()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let redis = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| SetupError(e.to_string()))?;
        let mut id = [0u8; 12];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| SetupError("no randomness".into()))?;
        Ok(Arc::new(Cluster {
            redis,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            holder: hex::encode(id),
            lease_ttl: settings.lease_ttl,
            lease_wait: settings.lease_wait,
            timeout: settings.timeout,
            metrics,
        }))
    }

    /// Runs one command within `cluster.timeout`; `None` when Redis failed
    /// (counted).
    async fn run<T: redis::FromRedisValue>(&self, op: ClusterOp, cmd: &redis::Cmd) -> Option<T> {
        let mut redis = self.redis.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut redis)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                tracing::warn!(op = op.as_str(), error = %e, "redis request failed; working alone");
                self.metrics.cluster(op, Found::Error);
                None
            }
            Err(_) => {
                tracing::warn!(op = op.as_str(), "redis request timed out; working alone");
                self.metrics.cluster(op, Found::Error);
                None
            }
        }
    }

    fn mac(&self, key: &str, value: &str) -> String {
        hex::encode(hmac::sign(&self.key, &signed_input(key, value)).as_ref())
    }

    /// `value|mac`, authenticated for `key`.
    fn seal(&self, key: &str, value: &str) -> String {
        format!("{value}|{}", self.mac(key, value))
    }

    /// The value of a sealed entry, if its MAC verifies for `key`.
    fn open<'a>(&self, op: ClusterOp, key: &str, sealed: &'a str) -> Option<&'a str> {
        let verified = sealed.rsplit_once('|').filter(|(value, mac)| {
            hex::decode(mac)
                .is_ok_and(|mac| hmac::verify(&self.key, &signed_input(key, value), &mac).is_ok())
        });
        match verified {
            Some((value, _)) => Some(value),
            None => {
                tracing::warn!(op = op.as_str(), "redis entry failed its MAC; ignored");
                self.metrics.cluster(op, Found::BadMac);
                None
            }
        }
    }

    fn tag_key(upstream: &UpstreamName, repo: &RepositoryName, tag: &Tag) -> String {
        format!("{PREFIX}tag:{upstream}/{repo}:{}", tag.as_str())
    }

    fn found_key(upstream: &UpstreamName, repo: &RepositoryName, name: &str) -> String {
        format!("{PREFIX}found:{upstream}/{repo}:{name}")
    }

    /// The digest another replica resolved the tag to within `tag_ttl`,
    /// and when it did.
    pub async fn tag(
        &self,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Option<(Digest, SystemTime)> {
        let key = Self::tag_key(upstream, repo, tag);
        let (digest, at) = self.stamped(ClusterOp::Tag, &key).await?;
        Some((digest.parse().ok()?, at))
    }

    /// Shares a tag mapping resolved at `at`, for what is left of `ttl`.
    pub async fn put_tag(
        &self,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        at: SystemTime,
        left: Duration,
    ) {
        let key = Self::tag_key(upstream, repo, tag);
        self.put_stamped(ClusterOp::Tag, &key, &digest.to_string(), at, left)
            .await;
    }

    /// What another replica's signature discovery found under `name` (a
    /// tag, or `referrers/<digest>`): the digest of the document, or `None`
    /// when there was none; and when it looked.
    pub async fn found(
        &self,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        name: &str,
    ) -> Option<(Option<Digest>, SystemTime)> {
        let key = Self::found_key(upstream, repo, name);
        let (value, at) = self.stamped(ClusterOp::Discovery, &key).await?;
        match value.as_str() {
            ABSENT => Some((None, at)),
            digest => Some((Some(digest.parse().ok()?), at)),
        }
    }

    /// Shares what discovery found under `name` at `at`, for what is left of `ttl`.
    pub async fn put_found(
        &self,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        name: &str,
        digest: Option<&Digest>,
        at: SystemTime,
        left: Duration,
    ) {
        let key = Self::found_key(upstream, repo, name);
        let value = digest.map_or_else(|| ABSENT.to_string(), Digest::to_string);
        self.put_stamped(ClusterOp::Discovery, &key, &value, at, left)
            .await;
    }

    /// A sealed `value@ms` entry: the value and when it was written.
    async fn stamped(&self, op: ClusterOp, key: &str) -> Option<(String, SystemTime)> {
        let sealed: Option<String> = self.run(op, redis::cmd("GET").arg(key)).await?;
        let Some(sealed) = sealed else {
            self.metrics.cluster(op, Found::Miss);
            return None;
        };
        let value = self.open(op, key, &sealed)?;
        let (value, at) = value.rsplit_once('@')?;
        let at = UNIX_EPOCH + Duration::from_millis(at.parse().ok()?);
        self.metrics.cluster(op, Found::Hit);
        Some((value.to_string(), at))
    }

    async fn put_stamped(
        &self,
        op: ClusterOp,
        key: &str,
        value: &str,
        at: SystemTime,
        left: Duration,
    ) {
        if left.is_zero() {
            return;
        }
        let sealed = self.seal(key, &format!("{value}@{}", unix_ms(at)));
        let cmd = redis::cmd("SET")
            .arg(key)
            .arg(sealed)
            .arg("PX")
            .arg(left.as_millis().max(1) as u64)
            .to_owned();
        if self.run::<()>(op, &cmd).await.is_some() {
            self.metrics.cluster(op, Found::Ok);
        }
    }

    fn reference_key(
        subject: Subject,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> String {
        format!(
            "{PREFIX}ref:{}:{upstream}/{repo}@{digest}",
            subject.as_str()
        )
    }

    /// The manifests another replica found naming `digest` in this
    /// repository, most recent first. Candidates only: each is decided
    /// again before it grants anything.
    pub async fn references(
        &self,
        subject: Subject,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Vec<Digest> {
        let key = Self::reference_key(subject, upstream, repo, digest);
        let cmd = redis::cmd("ZREVRANGE")
            .arg(&key)
            .arg(0)
            .arg(MAX_REFERENCES - 1)
            .to_owned();
        let members: Vec<String> = self.run(ClusterOp::Ref, &cmd).await.unwrap_or_default();
        if members.is_empty() {
            self.metrics.cluster(ClusterOp::Ref, Found::Miss);
            return Vec::new();
        }
        let found: Vec<Digest> = members
            .iter()
            .filter_map(|m| self.open(ClusterOp::Ref, &key, m))
            .filter_map(|v| v.parse().ok())
            .collect();
        if !found.is_empty() {
            self.metrics.cluster(ClusterOp::Ref, Found::Hit);
        }
        found
    }

    /// Records that `grantor`, allowed here, names each of `subjects`.
    pub async fn add_references(
        &self,
        subject: Subject,
        upstream: &UpstreamName,
        repo: &RepositoryName,
        subjects: &[Digest],
        grantor: &Digest,
    ) {
        if subjects.is_empty() {
            return;
        }
        let now = unix_ms(SystemTime::now());
        let mut pipe = redis::pipe();
        for d in subjects {
            let key = Self::reference_key(subject, upstream, repo, d);
            let member = self.seal(&key, &grantor.to_string());
            pipe.cmd("ZADD").arg(&key).arg(now).arg(member).ignore();
            pipe.cmd("ZREMRANGEBYRANK")
                .arg(&key)
                .arg(0)
                .arg(-(MAX_REFERENCES + 1))
                .ignore();
            pipe.cmd("PEXPIRE")
                .arg(&key)
                .arg(REFERENCE_TTL.as_millis() as u64)
                .ignore();
        }
        let mut redis = self.redis.clone();
        match tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut redis)).await {
            Ok(Ok(())) => self.metrics.cluster(ClusterOp::Ref, Found::Ok),
            _ => {
                tracing::warn!(
                    "recording references in redis failed; other replicas will fetch again"
                );
                self.metrics.cluster(ClusterOp::Ref, Found::Error);
            }
        }
    }

    fn lease_key(what: &str) -> String {
        format!("{PREFIX}lease:{what}")
    }

    /// A lease's value: `owner` (this process and a nonce of this lease,
    /// ending in `@`) and until when it holds, sealed for `key` (a value
    /// written without the secret, or replayed after its time, holds
    /// nothing up).
    fn lease_value(&self, key: &str, owner: &str) -> String {
        let until = SystemTime::now() + self.lease_ttl;
        self.seal(key, &format!("{owner}{}", unix_ms(until)))
    }

    /// Takes the lease on `what` if nobody holds it. While the returned
    /// [`Lease`] lives it is renewed; dropping it releases it. `Err(())`
    /// means another replica holds it; `Ok(None)` that Redis could not be
    /// asked, or that the entry in the way is not a lease any replica
    /// wrote (work alone).
    pub async fn lease(self: &Arc<Self>, what: &str) -> Result<Option<Lease>, ()> {
        let key = Self::lease_key(what);
        let mut nonce = [0u8; 8];
        if aws_lc_rs::rand::fill(&mut nonce).is_err() {
            return Ok(None);
        }
        let owner = format!("{}.{}@", self.holder, hex::encode(nonce));
        let cmd = redis::cmd("SET")
            .arg(&key)
            .arg(self.lease_value(&key, &owner))
            .arg("NX")
            .arg("PX")
            .arg(self.lease_ttl.as_millis() as u64)
            .to_owned();
        let taken: Option<Option<String>> = self.run(ClusterOp::Lease, &cmd).await;
        match taken {
            None => Ok(None),
            // Held, or released since (the caller looks for the result and
            // asks again): wait. Anything else in the way: work alone.
            Some(None) => match self.holder(what).await {
                Holder::Replica | Holder::Nobody => Err(()),
                Holder::Forged | Holder::Unknown => Ok(None),
            },
            Some(Some(_)) => {
                self.metrics.cluster(ClusterOp::Lease, Found::Ok);
                let this = Arc::clone(self);
                let (renew_key, renew_owner) = (key.clone(), owner.clone());
                let renewing = tokio::spawn(async move {
                    let every = this.lease_ttl / 3;
                    loop {
                        tokio::time::sleep(every).await;
                        let cmd = redis::cmd("EVAL")
                            .arg(RENEW)
                            .arg(1)
                            .arg(&renew_key)
                            .arg(&renew_owner)
                            .arg(this.lease_value(&renew_key, &renew_owner))
                            .arg(this.lease_ttl.as_millis() as u64)
                            .to_owned();
                        let _: Option<i64> = this.run(ClusterOp::Lease, &cmd).await;
                    }
                });
                Ok(Some(Lease {
                    cluster: Arc::clone(self),
                    key,
                    owner,
                    renewing,
                }))
            }
        }
    }

    /// The longest a request waits for another replica's work.
    pub fn lease_wait(&self) -> Duration {
        self.lease_wait
    }

    /// Whether a replica holds the lease on `what` (false when Redis fails:
    /// then nobody is waited for).
    pub async fn leased(&self, what: &str) -> bool {
        self.holder(what).await == Holder::Replica
    }

    /// Who holds the lease on `what`: a replica (an entry sealed by one,
    /// not past its time), nobody, an entry no replica wrote (or one
    /// replayed past its time), or unknown (Redis failed, or the entry is
    /// not a string).
    async fn holder(&self, what: &str) -> Holder {
        let key = Self::lease_key(what);
        let cmd = redis::cmd("GET").arg(&key).to_owned();
        let sealed = match self.run::<Option<String>>(ClusterOp::Lease, &cmd).await {
            Some(Some(sealed)) => sealed,
            Some(None) => return Holder::Nobody,
            // Redis failed, or the entry is not a string.
            None => return Holder::Unknown,
        };
        let now = unix_ms(SystemTime::now());
        let live = self
            .open(ClusterOp::Lease, &key, &sealed)
            .and_then(|v| v.rsplit_once('@'))
            .and_then(|(_, until)| until.parse::<u64>().ok())
            .is_some_and(|until| until.saturating_add(CLOCK_SKEW_MS) > now);
        match live {
            true => Holder::Replica,
            false => Holder::Forged,
        }
    }

    /// Waits for another replica's work on `what`: polls `ready` until it
    /// gives a result, the lease ends, or `deadline` passes (one deadline
    /// for all of a request's waiting, so a lease taken again and again
    /// cannot stretch it). `None` means do the work here.
    pub async fn wait_for<T, F, Fut>(
        &self,
        what: &str,
        deadline: tokio::time::Instant,
        mut ready: F,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let mut pause = Duration::from_millis(20);
        loop {
            if let Some(v) = ready().await {
                self.metrics.lease_wait(LeaseWait::Ready);
                return Some(v);
            }
            if !self.leased(what).await {
                // Released (or expired) since: the result may have landed just before.
                let last = ready().await;
                let how = if last.is_some() {
                    LeaseWait::Ready
                } else {
                    LeaseWait::Expired
                };
                self.metrics.lease_wait(how);
                return last;
            }
            if tokio::time::Instant::now() >= deadline {
                self.metrics.lease_wait(LeaseWait::Timeout);
                return None;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }
}

/// What a MAC covers: the entry's key and its value (an entry moved to
/// another key fails).
fn signed_input(key: &str, value: &str) -> Vec<u8> {
    let mut input = Vec::with_capacity(key.len() + value.len() + 1);
    input.extend_from_slice(key.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(value.as_bytes());
    input
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, PartialEq, Eq)]
enum Holder {
    Replica,
    Nobody,
    Forged,
    Unknown,
}

/// A lease held by this replica: renewed while it lives, released when dropped.
pub struct Lease {
    cluster: Arc<Cluster>,
    key: String,
    /// What this lease's value starts with (`holder.nonce@`).
    owner: String,
    renewing: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewing.abort();
        let cluster = Arc::clone(&self.cluster);
        let key = std::mem::take(&mut self.key);
        let owner = std::mem::take(&mut self.owner);
        // Releasing only saves the others the rest of the lease's TTL; it is
        // one bounded command, and a lease that is not released expires.
        tokio::spawn(async move {
            let cmd = redis::cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(&key)
                .arg(&owner)
                .to_owned();
            let _: Option<i64> = cluster.run(ClusterOp::Lease, &cmd).await;
        });
    }
}
