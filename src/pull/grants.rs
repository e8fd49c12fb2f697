//! Permissions derived from decisions. A blob, or a manifest named by an
//! index, may be served for a repository only because an allowed manifest of
//! that repository, decided under the gate in force, names it.
//!
//! A grant is not a permission kept on the side: it records *which*
//! manifests named the subject, under which gate generation. Asking whether
//! the subject is granted means asking whether one of those manifests still
//! has a live allow verdict under the current generation. So a grant dies
//! with the verdict that made it (its TTL, an exception's expiry, a reload,
//! a trust change), and a decision that finishes under an older gate grants
//! nothing: its generation is no longer the current one.

use std::sync::{Arc, Mutex};

use super::RepoDigest;
use crate::oci::Digest;
use crate::verify::Reached;

/// The most recent manifests remembered as naming one subject. A layer
/// shared by many images needs only one of them to be allowed.
const MAX_GRANTORS: usize = 8;

/// A manifest whose allow verdict grants a subject: its digest and how it
/// was reached (its verdict is cached under both).
pub(super) type Grantor = (Digest, Reached);

pub(super) struct Grants {
    by_subject: moka::sync::Cache<(RepoDigest, u64), Arc<Mutex<Vec<Grantor>>>>,
}

impl Grants {
    /// At most `capacity` subjects, each forgotten after `idle` unused. A
    /// grant is not a permission (the grantor's live verdict is), so it
    /// may outlive that verdict: the grantor is then decided again. New
    /// grants are always admitted (plain LRU), so a flood cannot keep
    /// legitimate ones out.
    pub(super) fn new(capacity: u64, idle: std::time::Duration) -> Grants {
        Grants {
            by_subject: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
        }
    }

    /// Records that `grantor`, allowed under `generation`, names `subject`.
    pub(super) fn record(&self, subject: RepoDigest, generation: u64, grantor: Grantor) {
        let slot = self
            .by_subject
            .get_with((subject, generation), || Arc::new(Mutex::new(Vec::new())));
        let mut grantors = slot.lock().unwrap_or_else(|e| e.into_inner());
        if grantors.contains(&grantor) {
            return;
        }
        if grantors.len() >= MAX_GRANTORS {
            grantors.remove(0);
        }
        grantors.push(grantor);
    }

    /// The manifests that named `subject` under `generation`.
    pub(super) fn grantors(&self, subject: &RepoDigest, generation: u64) -> Vec<Grantor> {
        self.by_subject
            .get(&(subject.clone(), generation))
            .map(|g| g.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    pub(super) fn clear(&self) {
        self.by_subject.invalidate_all();
    }
}
