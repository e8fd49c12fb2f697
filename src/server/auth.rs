//! Client authentication on the registry listener: static tokens (`Bearer
//! <token>`, or Basic with the identity as user name) and htpasswd users
//! with bcrypt hashes. Files are re-read when they change; a verified
//! password is remembered (by its SHA-256) for five minutes so bcrypt's
//! deliberate slowness is paid once per client, not per blob.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine;
use sha2::{Digest as _, Sha256};

use crate::config::ClientAuthConfig;

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
    pub fn new(config: &ClientAuthConfig) -> ClientAuth {
        ClientAuth {
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

    /// The identity an `Authorization` header proves, if any.
    pub fn identify(&self, authorization: Option<&str>) -> Option<String> {
        let value = authorization?;
        if let Some(token) = value.strip_prefix("Bearer ") {
            return self.by_token(token.trim());
        }
        let basic = value.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        if let Some(id) = self.by_token(password).filter(|id| id == user) {
            return Some(id);
        }
        self.by_password(user, password)
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

    fn by_password(&self, user: &str, password: &str) -> Option<String> {
        let path = self.htpasswd_file.as_ref()?;
        let hash = {
            let g = reload(path, &self.users, |text| {
                text.lines()
                    .filter_map(|l| l.trim().split_once(':'))
                    .map(|(u, h)| (u.to_string(), h.to_string()))
                    .collect()
            });
            g.entries.get(user)?.clone()
        };
        let mut key = Sha256::new();
        key.update(hash.as_bytes());
        key.update([0]);
        key.update(password.as_bytes());
        let key = (user.to_string(), key.finalize().into());
        if self.verified.contains_key(&key) {
            return Some(user.to_string());
        }
        // Only bcrypt ($2a$, $2b$, $2y$) hashes are accepted.
        if bcrypt::verify(password, &hash).unwrap_or(false) {
            self.verified.insert(key, ());
            return Some(user.to_string());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn tokens_and_bcrypt_users_identify_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&tokens, "ci-runner:s3cr3t-token\n").unwrap();
        let hash = bcrypt::hash("hunter2", 4).unwrap();
        std::fs::write(&htpasswd, format!("alice:{hash}\nbob:plaintext\n")).unwrap();
        let auth = ClientAuth::new(&ClientAuthConfig {
            tokens_file: Some(tokens.clone()),
            htpasswd_file: Some(htpasswd),
        });
        assert_eq!(
            auth.identify(Some("Bearer s3cr3t-token")).as_deref(),
            Some("ci-runner")
        );
        assert_eq!(
            auth.identify(Some(&basic("ci-runner", "s3cr3t-token")))
                .as_deref(),
            Some("ci-runner")
        );
        assert_eq!(
            auth.identify(Some(&basic("alice", "hunter2"))).as_deref(),
            Some("alice")
        );
        assert_eq!(
            auth.identify(Some(&basic("alice", "hunter2"))).as_deref(),
            Some("alice")
        );
        for bad in [
            None,
            Some("Bearer wrong".to_string()),
            Some(basic("alice", "wrong")),
            Some(basic("bob", "plaintext")),
            Some(basic("mallory", "s3cr3t-token")),
            Some("Basic !!!".to_string()),
        ] {
            assert_eq!(auth.identify(bad.as_deref()), None, "{bad:?}");
        }
        // Rotation: the old token stops working once the file changes.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&tokens, "ci-runner:rotated-token-value\n").unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        let f = std::fs::File::options().write(true).open(&tokens).unwrap();
        f.set_modified(later).unwrap();
        assert_eq!(auth.identify(Some("Bearer s3cr3t-token")), None);
        assert_eq!(
            auth.identify(Some("Bearer rotated-token-value")).as_deref(),
            Some("ci-runner")
        );
    }
}
