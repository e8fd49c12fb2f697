//! Reloading: the config file and trust material read again and put in
//! force whole, or refused whole with the running config kept.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest as _, Sha256};
use std::sync::Arc;

use super::{App, export_exceptions, export_expiry};
use crate::audit::{ConfigReload, Event, ReloadResult, TrustChange};
use crate::config::{Config, ConfigError, Problem};
use crate::trust::TrustSnapshot;
use crate::trust::refresh::{self, Refreshable};
use crate::trust::source::Refresh;
use crate::verify::Gate;

/// Why a reload was refused (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("trust material: {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Trust(Vec<Problem>),
}

/// Per authority whose fingerprints differ: what `new` trusts that `old`
/// did not, and what it no longer trusts.
fn trust_changes(
    old: &TrustSnapshot,
    new: &TrustSnapshot,
) -> Vec<(String, Vec<String>, Vec<String>)> {
    let fingerprints = |t: &TrustSnapshot, name: &str| -> BTreeSet<String> {
        t.authority(name)
            .map(|a| a.fingerprints().into_iter().collect())
            .unwrap_or_default()
    };
    let names: BTreeSet<&str> = old
        .authorities()
        .chain(new.authorities())
        .map(|a| a.name.as_str())
        .collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (before, after) = (fingerprints(old, name), fingerprints(new, name));
            let added: Vec<String> = after.difference(&before).cloned().collect();
            let removed: Vec<String> = before.difference(&after).cloned().collect();
            (!added.is_empty() || !removed.is_empty()).then(|| (name.to_string(), added, removed))
        })
        .collect()
}

/// The config text that was parsed and the bytes of every other file it
/// names, read now; `None` without a config file or when one is unreadable
/// (then no reload passes for a no-op).
pub(super) fn files_digest(config: &Config) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(config.source_digest?);
    for file in super::maintain::watched_files(config) {
        if Some(file) == config.source_file.as_deref() {
            continue;
        }
        part(&mut h, file.as_os_str().as_encoded_bytes());
        part(&mut h, &std::fs::read(file).ok()?);
    }
    Some(h.finalize().into())
}

/// Feeds `bytes` with its length, so that parts cannot run together.
fn part(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// The sections that changed but take effect only after a restart.
fn restart_needed(current: &Config, new: &Config) -> Vec<&'static str> {
    [
        ("server", current.server != new.server),
        ("admin", current.admin != new.admin),
        ("cache", current.cache != new.cache),
        ("cluster", current.cluster != new.cluster),
        ("limits", current.limits != new.limits),
        ("upstream", current.upstreams != new.upstreams),
        ("audit", current.audit != new.audit),
    ]
    .into_iter()
    .filter_map(|(section, changed)| changed.then_some(section))
    .collect()
}

impl App {
    /// Re-reads the config file (policies, exceptions, conditions,
    /// authorities and their files) and puts it in force with the URL
    /// sources' current material. An invalid config is refused, logged,
    /// counted and audited; the running one stays. Sections that need a
    /// restart (listeners, cache, upstreams, audit) are reported, not applied.
    pub async fn reload(&self, trigger: &str) -> Result<u64, ReloadError> {
        let _one = self.rebuilding.lock().await;
        let current = self.config();
        let (new, trust, inputs) = match self.load_new(&current) {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!(trigger, error = %e, "config reload refused; the running config stays");
                self.metrics.config_reload(false);
                self.audit.record(&Event::ConfigReload(ConfigReload {
                    trigger,
                    result: ReloadResult::Error {
                        error: e.to_string(),
                    },
                }));
                return Err(e);
            }
        };
        let unchanged = inputs.is_some()
            && *self
                .installed_inputs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                == inputs;
        if unchanged && !trigger.starts_with("trust_refresh:") {
            let (_, epoch) = self.puller.gate();
            tracing::info!(
                trigger,
                epoch,
                "config reloaded: unchanged, nothing retired"
            );
            self.metrics.config_reload(true);
            self.audit.record(&Event::ConfigReload(ConfigReload {
                trigger,
                result: ReloadResult::Unchanged { epoch },
            }));
            return Ok(epoch);
        }
        let restart_needed = restart_needed(&current, &new);
        if !restart_needed.is_empty() {
            tracing::warn!(sections = %restart_needed.join(", "), "config sections changed that take effect only after a restart");
        }
        let epoch = self.install(&new, trust, trigger);
        *self
            .installed_inputs
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = inputs;
        tracing::info!(trigger, epoch, "config reloaded");
        self.metrics.config_reload(true);
        self.audit.record(&Event::ConfigReload(ConfigReload {
            trigger,
            result: ReloadResult::Ok {
                epoch,
                restart_needed,
            },
        }));
        let mut merged = Config::clone(&current);
        merged.authorities = new.authorities;
        merged.policies = new.policies;
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(merged);
        Ok(epoch)
    }

    /// The digest of what a gate is built from: `files` (see
    /// [`files_digest`]) with the URL sources' documents and their
    /// availability as they are now.
    pub(super) fn inputs_digest(&self, files: Option<[u8; 32]>) -> Option<[u8; 32]> {
        let mut h = Sha256::new();
        h.update(files?);
        let sources: BTreeMap<String, bytes::Bytes> = self
            .sources
            .snapshot()
            .into_iter()
            .map(|(k, f)| (k, f.body))
            .collect();
        for (key, body) in &sources {
            part(&mut h, key.as_bytes());
            part(&mut h, body);
        }
        let available: BTreeMap<String, bool> = self
            .available
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .into_iter()
            .collect();
        for (key, up) in &available {
            part(&mut h, key.as_bytes());
            part(&mut h, &[u8::from(*up)]);
        }
        Some(h.finalize().into())
    }

    /// The config file as it is now, with trust loaded from it and the URL
    /// sources' current material.
    /// The digest of its inputs is taken before trust reads the files and
    /// again after; unless both agree there is none (the next reload
    /// installs whatever it reads).
    fn load_new(
        &self,
        current: &Config,
    ) -> Result<(Config, TrustSnapshot, Option<[u8; 32]>), ReloadError> {
        let new = match &current.source_file {
            Some(path) => Config::load(path)?,
            None => current.clone(),
        };
        // A source whose URL, kind or governance key changed counts for
        // nothing until it is fetched and checked under the new terms.
        let forgotten = self.sources.forget_changed(&new.authorities);
        self.refetch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(forgotten);
        let files = files_digest(&new);
        let inputs = self.inputs_digest(files);
        let trust = TrustSnapshot::load_with(&new.authorities, 0, &self.sources.snapshot())
            .map_err(ReloadError::Trust)?;
        // A file that changed while trust read it may have been read in
        // either form: then nothing can stand for what is in force.
        let inputs = inputs.filter(|_| files_digest(&new) == files);
        Ok((new, trust, inputs))
    }

    /// Puts `trust` and `config`'s policies in force; audits what trust changed.
    fn install(&self, config: &Config, trust: TrustSnapshot, trigger: &str) -> u64 {
        let (old_gate, _) = self.puller.gate();
        let old = old_gate.trust();
        let changes = trust_changes(old, &trust);
        export_expiry(&self.metrics, &trust);
        for gone in old
            .authorities()
            .filter(|a| trust.authority(&a.name).is_none())
        {
            let _ = self
                .metrics
                .trust_available
                .remove_label_values(&[gone.name.as_str()]);
        }
        let epoch = self
            .puller
            .install_gate(Gate::new(config.policies.clone(), Arc::new(trust)));
        self.metrics
            .trust_epoch
            .set(i64::try_from(epoch).unwrap_or(i64::MAX));
        export_exceptions(&self.metrics, config);
        self.trust_health();
        for (authority, added, removed) in &changes {
            let change = TrustChange {
                authority,
                added: added.iter().map(String::as_str).collect(),
                removed: removed.iter().map(String::as_str).collect(),
                epoch,
                source: trigger,
            };
            tracing::info!(authority, added = %change.added.join(", "), removed = %change.removed.join(", "), epoch, "trust changed");
            self.audit.record(&Event::TrustChange(change));
        }
        epoch
    }

    /// Refreshes one URL source or TUF repository; a change (or a source
    /// going stale, or fresh again) puts new trust in force. A verified
    /// refresh that brings nothing new renews the freshness the snapshot in
    /// force reads, so cached verdicts stay.
    pub async fn refresh(&self, what: &Refreshable) -> Refresh {
        let outcome = refresh::refresh(
            &self.sources,
            &self.metrics,
            &self.audit,
            what,
            self.clock.now(),
        )
        .await;
        let authority = what.key();
        let flipped = self.note_availability(what, true);
        if outcome == Refresh::Changed || flipped {
            self.put_trust_in_force(&authority).await;
        }
        outcome
    }

    /// Puts trust in force again for every source whose material went stale
    /// since its last refresh (its `max_stale` or its signed expiry passed),
    /// so that cached verdicts relying on it retire within a watch tick, not
    /// at the next refresh.
    pub async fn recheck_freshness(&self) {
        for what in refresh::refreshables(&self.config().authorities) {
            if self.note_availability(&what, false) {
                self.put_trust_in_force(&what.key()).await;
            }
        }
    }

    /// Records whether `what`'s material can be relied on now; true if that
    /// changed. A source not yet recorded is recorded only if `record_new`.
    fn note_availability(&self, what: &Refreshable, record_new: bool) -> bool {
        let key = what.key();
        let now = self.clock.now();
        let available = self
            .sources
            .snapshot()
            .get(&key)
            .is_some_and(|f| f.fresh_until(what.max_stale()) >= now);
        let mut known = self.available.lock().unwrap_or_else(|e| e.into_inner());
        if !record_new && !known.contains_key(&key) {
            return false;
        }
        known.insert(key, available) != Some(available)
    }

    async fn put_trust_in_force(&self, authority: &str) {
        let available = self
            .available
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(authority)
            .copied()
            .unwrap_or(false);
        if !available {
            tracing::error!(
                authority,
                "trust source stale (past max_stale or its signed expiry): decisions needing it deny trust_unavailable"
            );
        }
        if let Err(e) = self.reload(&format!("trust_refresh:{authority}")).await {
            tracing::error!(authority, error = %e, "could not put refreshed trust in force");
        }
    }
}
