//! What `/readyz` means. A replica's trust is *fresh* when every authority
//! it is configured with can be relied on now; otherwise it is *degraded*:
//! decisions needing an unavailable authority deny `trust_unavailable`,
//! everything else is still served. A degraded replica leaves the load
//! balancer (`/readyz` 503) only while a peer (`admin.peers`) reports fresh
//! trust on `/readyz/trust`, so clients go where every image can be judged;
//! when no peer does, it stays ready, because every replica going unready
//! at once would leave no endpoint at all, and says so in its body, in
//! `portcullis_trust_degraded` and in the alerts.
//! docs/decisions/0011-readiness-follows-trust-while-a-peer-is-fresh.md.
//!
//! Peer checks are bounded: at most [`MAX_PEERS`] addresses, asked at once,
//! [`PEER_TIMEOUT`] each (and as long to resolve a name), the answer reused
//! for [`PEER_CACHE`], and only while this replica's trust is degraded.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

pub use crate::config::MAX_PEERS;
use crate::config::PeerAddress;
use crate::trust::TrustSnapshot;

/// How long one peer may take to answer, and a name to resolve.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(1);

/// How long what the peers said is reused.
pub const PEER_CACHE: Duration = Duration::from_secs(5);

/// The header carrying a process's random instance id on `/readyz/trust`,
/// sent by the asker and answered by the peer, so that a replica listed
/// among its own peers (a headless Service lists every replica) knows
/// itself.
pub const INSTANCE_HEADER: &str = "portcullis-instance";

/// What a peer's `/readyz/trust` body starts with when its trust is fresh.
pub const FRESH: &str = "fresh";

/// The most bytes of a peer's answer that are read.
const ANSWER_BYTES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    #[error("peer check client: {0}")]
    Client(String),
}

/// Each configured authority's availability at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustHealth {
    /// By name; `unavailable` says why one cannot be relied on.
    authorities: Vec<AuthorityHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityHealth {
    pub name: String,
    /// Why it cannot be relied on now (control characters escaped, URL
    /// credentials removed: it is served without authentication), if so.
    pub unavailable: Option<String>,
}

impl TrustHealth {
    /// The availability of every authority in `trust` at `now`.
    pub fn of(trust: &TrustSnapshot, now: SystemTime) -> TrustHealth {
        let mut authorities: Vec<AuthorityHealth> = trust
            .authorities()
            .map(|a| AuthorityHealth {
                name: a.name.clone(),
                unavailable: a.availability(now).err().map(|why| {
                    crate::log::escape_control(&without_userinfo(&why.to_string())).into_owned()
                }),
            })
            .collect();
        authorities.sort_by(|a, b| a.name.cmp(&b.name));
        TrustHealth { authorities }
    }

    pub fn authorities(&self) -> &[AuthorityHealth] {
        &self.authorities
    }

    pub fn is_fresh(&self) -> bool {
        self.authorities.iter().all(|a| a.unavailable.is_none())
    }

    /// Why trust is degraded (every unavailable authority's reason), or
    /// `None` if it is fresh.
    pub fn degraded(&self) -> Option<String> {
        let reasons: Vec<&str> = self
            .authorities
            .iter()
            .filter_map(|a| a.unavailable.as_deref())
            .collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
}

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Shutdown has begun: new traffic goes elsewhere.
    ShuttingDown,
    /// Every authority can be relied on.
    Fresh,
    /// Some authority cannot; `fresh_peer` is a peer that says its trust is
    /// fresh, if one does.
    Degraded {
        reason: String,
        fresh_peer: Option<SocketAddr>,
    },
}

impl Readiness {
    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        matches!(
            self,
            Readiness::Fresh
                | Readiness::Degraded {
                    fresh_peer: None,
                    ..
                }
        )
    }

    /// The `/readyz` body.
    pub fn body(&self) -> String {
        match self {
            Readiness::ShuttingDown => "shutting down\n".into(),
            Readiness::Fresh => "ready\n".into(),
            Readiness::Degraded {
                reason,
                fresh_peer: None,
            } => format!("ready (trust degraded: {reason})\n"),
            Readiness::Degraded {
                reason,
                fresh_peer: Some(peer),
            } => format!("trust degraded ({reason}) and peer {peer} is fresh\n"),
        }
    }
}

/// `text` with the credentials of any URL in it removed
/// (`https://user:secret@host/` → `https://host/`).
fn without_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(i) => out.push_str(&authority[i + 1..]),
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The other replicas' admin listeners, and what they said last.
pub struct Peers {
    addresses: Vec<PeerAddress>,
    instance: String,
    client: reqwest::Client,
    /// When the peers were last asked, and the fresh one found. Held while
    /// asking, so concurrent `/readyz` requests share one round.
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, Option<SocketAddr>)>>,
}

impl Peers {
    pub fn new(addresses: Vec<PeerAddress>) -> Result<Peers, PeersError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(PEER_TIMEOUT)
            .timeout(PEER_TIMEOUT)
            .pool_max_idle_per_host(1)
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PeersError::Client(e.to_string()))?;
        Ok(Peers {
            addresses,
            instance: instance_id(),
            client,
            last: tokio::sync::Mutex::new(None),
        })
    }

    /// This process's random id, which `/readyz/trust` answers with.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// A peer (other than this process) whose trust is fresh, if any says
    /// so. The peers are asked at most once per [`PEER_CACHE`].
    pub async fn fresh_peer(&self) -> Option<SocketAddr> {
        if self.addresses.is_empty() {
            return None;
        }
        let mut last = self.last.lock().await;
        if let Some((at, found)) = *last {
            if at.elapsed() < PEER_CACHE {
                return found;
            }
        }
        let found = self.ask().await;
        *last = Some((tokio::time::Instant::now(), found));
        found
    }

    /// Every address the configured peers resolve to, each once, at most
    /// [`MAX_PEERS`] of them.
    async fn resolve(&self) -> Vec<SocketAddr> {
        let lookups = self.addresses.iter().map(|p| async move {
            let looked_up = tokio::time::timeout(
                PEER_TIMEOUT,
                tokio::net::lookup_host((p.host.as_str(), p.port)),
            )
            .await;
            match looked_up {
                Ok(Ok(addrs)) => addrs.collect(),
                Ok(Err(e)) => {
                    tracing::debug!(peer = %p, error = %e, "peer name does not resolve");
                    Vec::new()
                }
                Err(_) => {
                    tracing::debug!(peer = %p, "peer name took too long to resolve");
                    Vec::new()
                }
            }
        });
        let mut out: Vec<SocketAddr> = Vec::new();
        for addr in futures_util::future::join_all(lookups)
            .await
            .into_iter()
            .flatten()
        {
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        if out.len() > MAX_PEERS {
            tracing::warn!(
                addresses = out.len(),
                asked = MAX_PEERS,
                "admin.peers resolve to more addresses than are asked"
            );
            out.truncate(MAX_PEERS);
        }
        out
    }

    async fn ask(&self) -> Option<SocketAddr> {
        let addresses = self.resolve().await;
        let answers =
            futures_util::future::join_all(addresses.iter().map(|a| self.is_fresh(*a))).await;
        addresses
            .into_iter()
            .zip(answers)
            .find_map(|(addr, fresh)| fresh.then_some(addr))
    }

    /// Whether the replica at `addr` (not this process) says its trust is
    /// fresh: 200, a body starting `fresh`, within [`PEER_TIMEOUT`].
    async fn is_fresh(&self, addr: SocketAddr) -> bool {
        let answer = async {
            let mut r = self
                .client
                .get(format!("http://{addr}/readyz/trust"))
                .header(INSTANCE_HEADER, &self.instance)
                .send()
                .await
                .ok()?;
            let itself = r
                .headers()
                .get(INSTANCE_HEADER)
                .is_some_and(|v| v.as_bytes() == self.instance.as_bytes());
            if itself || r.status() != reqwest::StatusCode::OK {
                return Some(false);
            }
            let mut body = Vec::new();
            while body.len() < ANSWER_BYTES {
                match r.chunk().await.ok()? {
                    Some(chunk) => body.extend_from_slice(&chunk),
                    None => break,
                }
            }
            Some(body.starts_with(FRESH.as_bytes()))
        };
        let fresh = tokio::time::timeout(PEER_TIMEOUT, answer)
            .await
            .ok()
            .flatten()
            .unwrap_or(false);
        tracing::debug!(peer = %addr, fresh, "asked a peer about its trust");
        fresh
    }
}

/// A random id for this process (hex of 16 bytes).
fn instance_id() -> String {
    let mut bytes = [0u8; 16];
    let random = rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes);
    if random.is_err() {
        // Distinct per process is all it needs to be.
        use std::hash::BuildHasher as _;
        let seed = std::collections::hash_map::RandomState::new()
            .hash_one((std::process::id(), SystemTime::now()));
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_removed_and_the_rest_kept() {
        assert_eq!(
            without_userinfo(
                "its source https://u:secret@keys.example/acme.pub was last verified at x"
            ),
            "its source https://keys.example/acme.pub was last verified at x"
        );
        assert_eq!(
            without_userinfo("a https://h:1/x and http://a@b c"),
            "a https://h:1/x and http://b c"
        );
        assert_eq!(without_userinfo("no url: here"), "no url: here");
        // The authority ends at the first '/', '?', '#' or space; an '@'
        // past it is not userinfo and is kept.
        for end in ['/', '?', '#', ' '] {
            assert_eq!(
                without_userinfo(&format!("https://u:p@host{end}k@v")),
                format!("https://host{end}k@v"),
                "ends at {end:?}"
            );
        }
    }

    #[test]
    fn a_degraded_replica_is_ready_only_while_no_peer_is_fresh() {
        let degraded = |fresh_peer| Readiness::Degraded {
            reason: "trust for acme is stale: why".into(),
            fresh_peer,
        };
        assert!(Readiness::Fresh.is_ready());
        assert!(!Readiness::ShuttingDown.is_ready());
        assert!(degraded(None).is_ready());
        assert_eq!(
            degraded(None).body(),
            "ready (trust degraded: trust for acme is stale: why)\n"
        );
        let peer: SocketAddr = "10.0.0.5:9090".parse().unwrap();
        assert!(!degraded(Some(peer)).is_ready());
        assert_eq!(
            degraded(Some(peer)).body(),
            "trust degraded (trust for acme is stale: why) and peer 10.0.0.5:9090 is fresh\n"
        );
    }

    #[tokio::test]
    async fn peers_resolving_to_more_than_max_peers_addresses_are_cut_to_max_peers_each_once() {
        let mut addresses: Vec<PeerAddress> = (1..=20)
            .map(|port| PeerAddress {
                host: "127.0.0.1".into(),
                port,
            })
            .collect();
        addresses.insert(1, addresses[0].clone());
        let peers = Peers::new(addresses).unwrap();
        let asked = peers.resolve().await;
        let expected: Vec<SocketAddr> = (1..=16)
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect();
        assert_eq!(asked, expected);
    }

    /// A peer answering every request with `status` and body `fresh`.
    async fn peer_answering(status: &'static str) -> PeerAddress {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = conn.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: 6\r\nconnection: close\r\n\r\nfresh\n"
                );
                let _ = conn.write_all(response.as_bytes()).await;
            }
        });
        PeerAddress {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[tokio::test]
    async fn a_peer_counts_as_fresh_only_when_it_answers_200_fresh() {
        let ok = peer_answering("200 OK").await;
        let port = ok.port;
        let found = Peers::new(vec![ok]).unwrap().fresh_peer().await;
        assert_eq!(found, Some(SocketAddr::from(([127, 0, 0, 1], port))));
        let unavailable = peer_answering("503 Service Unavailable").await;
        let found = Peers::new(vec![unavailable]).unwrap().fresh_peer().await;
        assert_eq!(found, None, "a 503 is not fresh whatever its body says");
    }

    #[test]
    fn instance_ids_differ() {
        assert_ne!(instance_id(), instance_id());
        assert_eq!(instance_id().len(), 32);
    }
}
