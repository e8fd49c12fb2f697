//! What is being denied now (`GET /admin/denials`, `portcullis denials`):
//! kept from the same decisions the audit log records, so the two never
//! disagree. One entry per upstream, repository and reference (a tag, or
//! a digest asked for by digest); an allowed decision for that reference
//! ends it. Bounded: at most `[audit] denials` entries, the least used
//! evicted first, and a few distinct clients per entry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Decision;
use crate::clock::Clock;

/// Distinct clients listed per entry; the others are counted.
const CLIENTS: usize = 8;

/// Bytes of a denial's message kept (it may carry upstream-chosen text).
const MESSAGE: usize = 512;

/// `s` cut to at most `most` bytes, at a character boundary.
fn bounded(s: &str, most: usize) -> &str {
    let mut end = most.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Upstream, repository, reference.
type Key = (String, String, String);

/// The denials in force, as one entry each. Entries are found by a keyed
/// hash of their names, so an allowed pull (the cached-manifest path)
/// looks one up without building its key; the entry holds the names and
/// is only taken for the names it holds.
pub struct Denials {
    entries: moka::sync::Cache<u64, Arc<(Key, Mutex<Waiting>)>>,
    hasher: std::hash::RandomState,
    clock: Arc<dyn Clock>,
    /// Whether anything was ever denied.
    any: AtomicBool,
}

/// One reference being denied.
#[derive(Debug, Clone)]
struct Waiting {
    digest: Option<String>,
    reason: String,
    policy: String,
    message: Option<String>,
    first_seen: SystemTime,
    last_seen: SystemTime,
    count: u64,
    clients: Vec<String>,
    other_clients: u64,
    decision: String,
}

/// One entry as `/admin/denials` lists it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Denial {
    pub upstream: String,
    pub repository: String,
    /// The tag, or the digest asked for by digest.
    pub reference: String,
    /// The manifest last denied under this reference (none when the
    /// denial came before its digest was known).
    pub digest: Option<String>,
    pub reason: String,
    pub policy: String,
    pub message: Option<String>,
    /// RFC 3339.
    pub first_seen: String,
    pub last_seen: String,
    /// Denials of this reference since it was first seen.
    pub count: u64,
    /// Up to eight distinct clients (`identity@host`, or the host address).
    pub clients: Vec<String>,
    /// Clients beyond those listed, counted once per denial.
    pub other_clients: u64,
    /// The id of the last denial (`portcullis why ID`).
    pub last_decision: String,
}

impl Denials {
    pub fn new(capacity: u64, clock: Arc<dyn Clock>) -> Denials {
        Denials {
            entries: moka::sync::Cache::builder().max_capacity(capacity).build(),
            hasher: std::hash::RandomState::new(),
            clock,
            any: AtomicBool::new(false),
        }
    }

    /// Takes in one recorded decision: a denial adds to its entry, an
    /// allowed pull of the same reference ends it.
    pub(super) fn decided(&self, d: &Decision<'_>) {
        match d.decision {
            // A scoped identity's refusals cost nothing upstream and name
            // whatever it asks: in the audit log and metrics, not here,
            // where they would crowd out what is really waiting.
            "deny" if d.reason == "not_authorized" => {}
            "deny" => self.denied(d),
            // Until the first denial no allowed pull has an entry to end.
            "allow" | "allow_exception" if self.any.load(Ordering::Relaxed) => {
                let slot = self.slot(d);
                if self.entries.get(&slot).is_some_and(|e| holds(&e.0, d)) {
                    self.entries.invalidate(&slot);
                }
            }
            _ => {}
        }
    }

    fn slot(&self, d: &Decision<'_>) -> u64 {
        use std::hash::BuildHasher;
        self.hasher
            .hash_one((d.upstream, d.repository, d.reference.as_str()))
    }

    fn denied(&self, d: &Decision<'_>) {
        self.any.store(true, Ordering::Relaxed);
        let now = self.clock.now();
        let slot = self.slot(d);
        let fresh = || {
            let key = (
                d.upstream.to_string(),
                d.repository.to_string(),
                d.reference.clone(),
            );
            Arc::new((
                key,
                Mutex::new(Waiting {
                    digest: None,
                    reason: String::new(),
                    policy: String::new(),
                    message: None,
                    first_seen: now,
                    last_seen: now,
                    count: 0,
                    clients: Vec::new(),
                    other_clients: 0,
                    decision: String::new(),
                }),
            ))
        };
        let mut entry = self.entries.get_with(slot, fresh);
        if !holds(&entry.0, d) {
            // Another reference's hash (2^-64): this one takes the slot.
            entry = fresh();
            self.entries.insert(slot, Arc::clone(&entry));
        }
        let mut w = entry.1.lock().unwrap_or_else(|e| e.into_inner());
        w.digest = d.digest.clone().or(w.digest.take());
        w.reason = d.reason.to_string();
        w.policy = d.policy.to_string();
        w.message = d.message.map(|m| bounded(m, MESSAGE).to_string());
        w.last_seen = now;
        w.count += 1;
        w.decision = d.id.to_string();
        // The address without its port: one host reconnecting is one client.
        let host = d.client.as_deref().map(|a| {
            a.parse::<std::net::SocketAddr>()
                .map_or_else(|_| a.to_string(), |s| s.ip().to_string())
        });
        let client = match (d.identity, host) {
            (Some(identity), Some(host)) => Some(format!("{identity}@{host}")),
            (Some(identity), None) => Some(identity.to_string()),
            (None, Some(host)) => Some(host),
            (None, None) => None,
        };
        if let Some(client) = client {
            if !w.clients.contains(&client) {
                if w.clients.len() < CLIENTS {
                    w.clients.push(client);
                } else {
                    w.other_clients += 1;
                }
            }
        }
    }

    /// The entries last seen within `since` (all without it), the most
    /// recent first.
    pub fn list(&self, since: Option<Duration>) -> Vec<Denial> {
        let now = self.clock.now();
        let mut listed: Vec<(SystemTime, Denial)> = self
            .entries
            .iter()
            .filter_map(|(_, entry)| {
                let (key, waiting) = &*entry;
                let w = waiting.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let recent =
                    since.is_none_or(|s| now.duration_since(w.last_seen).unwrap_or_default() <= s);
                recent.then(|| (w.last_seen, denial(key, w)))
            })
            .collect();
        listed.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| a.1.reference.cmp(&b.1.reference))
        });
        listed.into_iter().map(|(_, d)| d).collect()
    }

    /// Entries held.
    pub fn held(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

/// Whether the entry named `key` is the one decision `d` is about.
fn holds(key: &Key, d: &Decision<'_>) -> bool {
    key.0 == d.upstream && key.1 == d.repository && key.2 == d.reference
}

fn denial(key: &Key, w: Waiting) -> Denial {
    let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    Denial {
        upstream: key.0.clone(),
        repository: key.1.clone(),
        reference: key.2.clone(),
        digest: w.digest,
        reason: w.reason,
        policy: w.policy,
        message: w.message,
        first_seen: time(w.first_seen),
        last_seen: time(w.last_seen),
        count: w.count,
        clients: w.clients,
        other_clients: w.other_clients,
        last_decision: w.decision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn decision<'a>(decision: &'a str, reference: &str, id: &'a str, client: &str) -> Decision<'a> {
        Decision {
            id,
            upstream: "hub",
            repository: "acme/app",
            reference: reference.to_string(),
            digest: Some("sha256:aa".into()),
            decision,
            policy: "acme",
            reason: if decision == "deny" {
                "no_signature"
            } else {
                "none"
            },
            authorities: Vec::new(),
            exception: None,
            trust_epoch: 1,
            client: Some(client.to_string()),
            identity: None,
            message: None,
            served_stale_seconds: None,
        }
    }

    fn setup(capacity: u64) -> (Arc<ManualClock>, Denials) {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        ));
        let denials = Denials::new(capacity, clock.clone());
        (clock, denials)
    }

    #[test]
    fn repeated_denials_of_one_reference_are_one_entry_counted_with_first_and_last_seen() {
        let (clock, d) = setup(10);
        d.decided(&decision("deny", "v1", "id1", "10.0.0.1:1"));
        clock.advance(Duration::from_secs(60));
        d.decided(&decision("deny", "v1", "id2", "10.0.0.2:1"));
        d.decided(&decision("deny", "v1", "id3", "10.0.0.1:2"));
        let list = d.list(None);
        assert_eq!(list.len(), 1, "{list:?}");
        let e = &list[0];
        assert_eq!((e.count, e.last_decision.as_str()), (3, "id3"));
        assert_eq!(
            e.clients,
            ["10.0.0.1", "10.0.0.2"],
            "one host is one client, whatever its port"
        );
        assert_eq!(e.first_seen, "1970-01-12T13:46:40Z");
        assert_eq!(e.last_seen, "1970-01-12T13:47:40Z");
        assert_eq!(e.reason, "no_signature");
    }

    #[test]
    fn an_allowed_pull_of_the_reference_ends_its_entry_and_others_stay() {
        let (_, d) = setup(10);
        assert_eq!(d.held(), 0);
        d.decided(&decision("deny", "v1", "a", "c:1"));
        d.decided(&decision("deny", "v2", "b", "c:1"));
        assert_eq!(d.held(), 2);
        d.decided(&decision("audit_deny", "v1", "c", "c:1"));
        assert_eq!(
            d.list(None).len(),
            2,
            "a served audit-mode pull ends nothing"
        );
        d.decided(&decision("allow", "v1", "d", "c:1"));
        let left: Vec<String> = d.list(None).into_iter().map(|e| e.reference).collect();
        assert_eq!(left, ["v2"]);
        d.decided(&decision("allow_exception", "v2", "e", "c:1"));
        assert!(d.list(None).is_empty());
    }

    #[test]
    fn scope_refusals_are_not_listed_and_messages_are_bounded() {
        let (_, d) = setup(10);
        let mut refused = decision("deny", "v1", "a", "c:1");
        refused.reason = "not_authorized";
        d.decided(&refused);
        assert!(d.list(None).is_empty());
        let long = "x".repeat(10_000);
        let mut denied = decision("deny", "v1", "b", "c:1");
        denied.message = Some(&long);
        d.decided(&denied);
        assert_eq!(
            d.list(None)[0].message.as_deref().map(str::len),
            Some(MESSAGE)
        );
    }

    #[test]
    fn since_keeps_only_what_was_denied_within_it_the_most_recent_first() {
        let (clock, d) = setup(10);
        d.decided(&decision("deny", "old", "a", "c:1"));
        clock.advance(Duration::from_secs(3600));
        d.decided(&decision("deny", "new", "b", "c:1"));
        clock.advance(Duration::from_secs(60));
        d.decided(&decision("deny", "newest", "c", "c:1"));
        let all: Vec<String> = d.list(None).into_iter().map(|e| e.reference).collect();
        assert_eq!(all, ["newest", "new", "old"]);
        let recent: Vec<String> = d
            .list(Some(Duration::from_secs(120)))
            .into_iter()
            .map(|e| e.reference)
            .collect();
        assert_eq!(recent, ["newest", "new"]);
    }

    #[test]
    fn entries_and_clients_per_entry_are_bounded() {
        let (_, d) = setup(50);
        for i in 0..500 {
            d.decided(&decision("deny", &format!("t{i}"), "x", "c:1"));
        }
        assert!((1..=50).contains(&d.held()), "{} entries", d.held());
        for i in 0..20 {
            d.decided(&decision("deny", "many", "y", &format!("10.0.0.{i}:1")));
        }
        let many = d
            .list(None)
            .into_iter()
            .find(|e| e.reference == "many")
            .expect("a reference denied twenty times is kept");
        assert_eq!((many.clients.len(), many.other_clients), (CLIENTS, 12));
    }
}
