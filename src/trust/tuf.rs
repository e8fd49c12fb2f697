//! The TUF client run for a `trusted_root = { tuf = … }` repository:
//! `sigstore-tuf`'s updater (root rotation, timestamp, snapshot, targets,
//! each checked for signatures, versions and expiry from the initial root),
//! with every `root.json` checked by [`check_root`] where it enters, from
//! the repository or from the cache.
//!
//! The library adopts a new root once it is signed to threshold by the old
//! root and by itself, and only then reads its other roles. A root validly
//! signed but declaring threshold 0 (or more signatures than it lists keys
//! for) for another role was adopted and cached, after which every refresh
//! failed on that role, even once the repository published good metadata:
//! the chain had advanced to a root nothing could satisfy. Refused here, the
//! chain stays at the last good root, and a corrected root is adopted.

use std::collections::HashSet;
use std::time::SystemTime;

use bytes::Bytes;
use sigstore_tuf::transport::FetchFuture;
use sigstore_tuf::{
    FileStore, HttpRepository, MetadataStore, Repository, StoreRepository, Updater,
};

use crate::config::TufSource;

/// The roles a root must bind to keys.
const TOP_LEVEL_ROLES: [&str; 4] = ["root", "timestamp", "snapshot", "targets"];

/// Why `bytes` is not a root this client can ever work from: every
/// top-level role must be present, with a threshold of at least 1 and no
/// more than the distinct keys it lists that the root declares and
/// verification can use (a supported scheme, a key of an accepted size).
pub fn check_root(bytes: &[u8]) -> Result<(), String> {
    let root: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let signed = &root["signed"];
    let keys = signed["keys"]
        .as_object()
        .ok_or("root.json declares no `keys`")?;
    let roles = signed["roles"]
        .as_object()
        .ok_or("root.json declares no `roles`")?;
    for role in TOP_LEVEL_ROLES {
        let binding = roles
            .get(role)
            .ok_or_else(|| format!("root.json declares no role {role}"))?;
        let threshold = binding["threshold"]
            .as_u64()
            .ok_or_else(|| format!("role {role} declares no integer threshold"))?;
        let listed: HashSet<&str> = binding["keyids"]
            .as_array()
            .ok_or_else(|| format!("role {role} lists no `keyids`"))?
            .iter()
            .filter_map(|k| k.as_str())
            .filter(|k| keys.get(*k).is_some_and(usable_key))
            .collect();
        if threshold == 0 {
            return Err(format!(
                "role {role} declares signature threshold 0; at least 1 is required"
            ));
        }
        if threshold > listed.len() as u64 {
            return Err(format!(
                "role {role} declares signature threshold {threshold} but lists {} usable key(s) the root declares: it can never be met",
                listed.len()
            ));
        }
    }
    Ok(())
}

/// A TUF key declaration verification can use, by the rules it applies
/// when it verifies.
fn usable_key(key: &serde_json::Value) -> bool {
    serde_json::from_value::<sigstore_tuf::Key>(key.clone())
        .ok()
        .and_then(|k| k.verification_key().ok())
        .is_some_and(|vk| {
            sigstore_verify::crypto::validate_raw_public_key(vk.scheme(), vk.as_bytes()).is_ok()
        })
}

/// A root file: `N.root.json` from a repository, `root.json` or
/// `root_history/N.root.json` in the cache.
fn is_root(name: &str) -> bool {
    name == "root.json" || name.ends_with(".root.json")
}

/// A repository whose roots are refused unless [`check_root`] accepts them.
struct CheckedRoots<R>(R);

impl<R: Repository> Repository for CheckedRoots<R> {
    fn fetch_metadata<'a>(&'a self, name: &'a str, max_length: u64) -> FetchFuture<'a> {
        Box::pin(async move {
            let bytes = self.0.fetch_metadata(name, max_length).await?;
            if let Some(b) = bytes.as_deref().filter(|_| is_root(name)) {
                check_root(b)
                    .map_err(|e| sigstore_tuf::Error::Malformed(format!("{name} refused: {e}")))?;
            }
            Ok(bytes)
        })
    }

    fn fetch_target<'a>(&'a self, path: &'a str, max_length: u64) -> FetchFuture<'a> {
        self.0.fetch_target(path, max_length)
    }
}

/// A cache whose roots are ignored (a miss) unless [`check_root`] accepts
/// them: one cached by an earlier version that did not check is not
/// fast-forwarded to.
struct CheckedStore<S>(S);

impl<S: MetadataStore> MetadataStore for CheckedStore<S> {
    fn load(&self, name: &str) -> sigstore_tuf::Result<Option<Vec<u8>>> {
        Ok(self
            .0
            .load(name)?
            .filter(|b| !is_root(name) || check_root(b).is_ok()))
    }

    fn store(&self, name: &str, bytes: &[u8]) -> sigstore_tuf::Result<()> {
        self.0.store(name, bytes)
    }
}

/// `trusted_root.json` from `tuf`, verified through TUF at `now` from the
/// repository (or, `offline`, from the cache alone), as JSON that builds a
/// usable root.
pub async fn fetch(tuf: &TufSource, offline: bool, now: SystemTime) -> Result<Bytes, String> {
    use sigstore_verify::trust_root::{SigstoreInstance, TrustedRoot};
    let initial = match &tuf.root {
        Some(p) => std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        None => SigstoreInstance::PublicGood.tuf_root().to_vec(),
    };
    check_root(&initial).map_err(|e| format!("initial root: {e}"))?;
    let at = jiff_time(now)?;
    let store = FileStore::new(tuf.cache_dir.clone());
    let failed = |e: sigstore_tuf::Error| format!("{}: {}", tuf.url, chain(&e));
    let mut updater = if offline {
        Updater::new(CheckedRoots(StoreRepository::new(store.clone())), &initial)
    } else {
        tokio::fs::create_dir_all(&tuf.cache_dir)
            .await
            .map_err(|e| format!("cannot create {}: {e}", tuf.cache_dir.display()))?;
        let repo = HttpRepository::new(tuf.url.as_str())
            .map_err(failed)?
            .with_http_client(super::source::http_client(tuf.ca_file.as_deref())?);
        Updater::new(CheckedRoots(repo), &initial)
    }
    .map_err(failed)?
    .with_store(CheckedStore(store));
    updater.refresh(at).await.map_err(failed)?;
    let target = updater
        .get_target("trusted_root.json", at)
        .await
        .map_err(failed)?;
    let json = String::from_utf8(target)
        .map_err(|_| format!("{}: trusted_root.json is not UTF-8", tuf.url))?;
    let root = TrustedRoot::from_json(&json).map_err(|e| format!("{}: {e}", tuf.url))?;
    let json = serde_json::to_string(&root).map_err(|e| e.to_string())?;
    crate::material::SigstoreRoot::from_json(&json)
        .map_err(|e| format!("{}: trusted_root.json: {e}", tuf.url))?;
    Ok(Bytes::from(json))
}

/// `now` as the TUF library's time type.
fn jiff_time<T: TryFrom<SystemTime>>(now: SystemTime) -> Result<T, String> {
    T::try_from(now).map_err(|_| "the clock is out of range".to_string())
}

/// An error with its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
#[path = "tuf_tests.rs"]
mod tests;
