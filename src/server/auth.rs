//! Client authentication on the registry listener: static tokens (`Bearer
//! <token>`, or Basic with the identity as user name) and htpasswd users
//! with bcrypt hashes. Files are re-read when they change; a verified
//! password is remembered (by its SHA-256) for five minutes so bcrypt's
//! deliberate slowness is paid once per client, not per blob.
//!
//! bcrypt runs on the blocking pool, at most `password_checks` at once; past
//! that a password that is not remembered is refused at once (503, retry)
//! rather than queued. A client address (IPv6: its /64) with
//! `failure_limit` failed passwords within `failure_backoff` has its
//! password attempts refused (429) for `failure_backoff` without bcrypt.
//! Tokens and remembered passwords are never held up by either.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use crate::config::ClientAuthConfig;
use crate::metrics::{Metrics, PasswordRefusal};

/// Why a request's credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Missing or wrong credentials.
    Unauthorized,
    /// `password_checks` bcrypt checks are already running.
    Saturated,
    /// Too many failed passwords from this client's address lately.
    BackedOff { retry_after: Duration },
}

/// Client addresses remembered for back-off.
const FAILURE_ENTRIES: u64 = 100_000;

/// One client address's recent failed passwords.
#[derive(Debug)]
struct Failures {
    window_start: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

/// The unit failures are counted by: an IPv4 address, or an IPv6 /64 (one
/// host commonly holds a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
    }
}

#[derive(Default)]
struct Loaded<T> {
    stamp: Option<SystemTime>,
    entries: T,
}

pub struct ClientAuth {
    tokens_file: Option<PathBuf>,
    htpasswd_file: Option<PathBuf>,
    /// token → identity
    tokens: Mutex<Loaded<HashMap<String, String>>>,
    /// user → bcrypt hash
    users: Mutex<Loaded<HashMap<String, String>>>,
    verified: moka::sync::Cache<(String, [u8; 32]), ()>,
    /// Permits for bcrypt checks running at once.
    checks: Arc<Semaphore>,
    failure_limit: u32,
    failure_backoff: Duration,
    failures: moka::sync::Cache<IpAddr, Arc<Mutex<Failures>>>,
    /// `portcullis_password_checks_refused_total`.
    metrics: Arc<Metrics>,
}

/// Constant-time equality for secrets.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn reload<'a, T: Default>(
    path: &Path,
    slot: &'a Mutex<Loaded<T>>,
    parse: impl Fn(&str) -> T,
) -> std::sync::MutexGuard<'a, Loaded<T>> {
    let mut g = slot.lock().unwrap_or_else(|e| e.into_inner());
    let stamp = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if stamp != g.stamp || stamp.is_none() {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                g.entries = parse(&text);
                g.stamp = stamp;
            }
            // A missing file lets nobody in (fail closed).
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "client credentials unreadable");
                g.entries = T::default();
                g.stamp = None;
            }
        }
    }
    g
}

impl ClientAuth {
    pub fn new(config: &ClientAuthConfig, metrics: Arc<Metrics>) -> ClientAuth {
        metrics.password_refusals_counted();
        ClientAuth {
            checks: Arc::new(Semaphore::new(config.password_checks)),
            failure_limit: config.failure_limit,
            failure_backoff: config.failure_backoff,
            failures: moka::sync::Cache::builder()
                .max_capacity(FAILURE_ENTRIES)
                .time_to_idle(config.failure_backoff.saturating_mul(2))
                .build(),
            metrics,
            tokens_file: config.tokens_file.clone(),
            htpasswd_file: config.htpasswd_file.clone(),
            tokens: Mutex::default(),
            users: Mutex::default(),
            verified: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
        }
    }

    /// The identity an `Authorization` header proves, for a client at
    /// `peer`.
    pub async fn identify(
        &self,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<String, Refusal> {
        let value = authorization.ok_or(Refusal::Unauthorized)?;
        if let Some(token) = value.strip_prefix("Bearer ") {
            return self.by_token(token.trim()).ok_or(Refusal::Unauthorized);
        }
        let basic = value.strip_prefix("Basic ").ok_or(Refusal::Unauthorized)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or(Refusal::Unauthorized)?;
        let (user, password) = decoded.split_once(':').ok_or(Refusal::Unauthorized)?;
        if let Some(id) = self.by_token(password).filter(|id| id == user) {
            return Ok(id);
        }
        let outcome = self.by_password(user, password, peer).await;
        if outcome == Err(Refusal::Unauthorized) {
            self.failed(peer);
        }
        outcome
    }

    /// How long `peer`'s password attempts are still refused.
    fn backed_off(&self, peer: Option<IpAddr>) -> Option<Duration> {
        let entry = self.failures.get(&client_key(peer?))?;
        let until = entry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .blocked_until?;
        until.checked_duration_since(Instant::now())
    }

    fn failed(&self, peer: Option<IpAddr>) {
        let Some(peer) = peer else { return };
        if self.failure_limit == 0 {
            return;
        }
        let now = Instant::now();
        let entry = self.failures.get_with(client_key(peer), || {
            Arc::new(Mutex::new(Failures {
                window_start: now,
                count: 0,
                blocked_until: None,
            }))
        });
        let mut f = entry.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(f.window_start) > self.failure_backoff {
            f.window_start = now;
            f.count = 0;
        }
        f.count += 1;
        if f.count >= self.failure_limit {
            f.blocked_until = Some(now + self.failure_backoff);
            f.window_start = now;
            f.count = 0;
        }
    }

    fn by_token(&self, token: &str) -> Option<String> {
        let path = self.tokens_file.as_ref()?;
        let g = reload(path, &self.tokens, |text| {
            text.lines()
                .filter_map(|l| l.trim().split_once(':'))
                .filter(|(id, t)| !id.is_empty() && !t.is_empty())
                .map(|(id, t)| (t.to_string(), id.to_string()))
                .collect()
        });
        g.entries
            .iter()
            .find(|(t, _)| same(t.as_bytes(), token.as_bytes()))
            .map(|(_, id)| id.clone())
    }

    async fn by_password(
        &self,
        user: &str,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<String, Refusal> {
        let path = self.htpasswd_file.as_ref().ok_or(Refusal::Unauthorized)?;
        let hash = {
            let g = reload(path, &self.users, |text| {
                text.lines()
                    .filter_map(|l| l.trim().split_once(':'))
                    .map(|(u, h)| (u.to_string(), h.to_string()))
                    .collect()
            });
            g.entries.get(user).ok_or(Refusal::Unauthorized)?.clone()
        };
        let mut key = Sha256::new();
        key.update(hash.as_bytes());
        key.update([0]);
        key.update(password.as_bytes());
        let key = (user.to_string(), key.finalize().into());
        if self.verified.contains_key(&key) {
            return Ok(user.to_string());
        }
        if let Some(retry_after) = self.backed_off(peer) {
            self.metrics
                .password_check_refused(PasswordRefusal::Backoff);
            return Err(Refusal::BackedOff { retry_after });
        }
        let Ok(permit) = Arc::clone(&self.checks).try_acquire_owned() else {
            self.metrics
                .password_check_refused(PasswordRefusal::Saturated);
            return Err(Refusal::Saturated);
        };
        // The permit goes with the check, so a client that hangs up does not
        // free it while bcrypt still runs.
        let password = password.to_string();
        let checked = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // Only bcrypt ($2a$, $2b$, $2y$) hashes are accepted.
            bcrypt::verify(password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if checked {
            self.verified.insert(key, ());
            return Ok(user.to_string());
        }
        Err(Refusal::Unauthorized)
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
