//! Shared test support: real components on loopback, each test with its own
//! ports and temp dirs so tests run in parallel.

pub mod balancer;
pub mod config;
pub mod containerd;
pub mod cosign;
pub mod dockerd;
pub mod fulcio;
pub mod garage;
pub mod image;
pub mod keyless;
pub mod pki;
pub mod redis_server;
pub mod registry;
pub mod runnable;
pub mod scripted;
pub mod skopeo;
pub mod throttle;
pub mod token;
pub mod trust_server;
pub mod tuf;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use config::{Attestation, Authority, Exception, Policy, ProxyConfig, Subject, Upstream};
pub use image::{Blob, Image, Index, Pusher};
#[allow(unused_imports)]
pub use registry::{Registry, RegistryAuth};

/// The bearer token every test proxy's admin endpoints accept.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Portcullis running in this test process on its own ports and cache dir.
pub struct Proxy {
    pub port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), portcullis::RunError>>>,
    pub client: reqwest::Client,
}

impl Proxy {
    /// Starts Portcullis with `config`, in its folder (else a fresh one),
    /// on a free port, its admin listener on the config's admin port (else a
    /// free one), its time from the config's clock (else the system's). A
    /// port another test took between [`free_port`] and the bind is picked
    /// again.
    pub async fn start(mut config: ProxyConfig) -> Proxy {
        let mut dir = config
            .dir
            .take()
            .unwrap_or_else(|| tempfile::tempdir().unwrap());
        let clock = config.clock.take();
        std::fs::write(dir.path().join("admin.token"), ADMIN_TOKEN).unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        for attempt in 1.. {
            let port = free_port();
            let admin_port = config.admin_port.unwrap_or_else(free_port);
            let text = config.render(port, admin_port);
            let path = dir.path().join("portcullis.toml");
            std::fs::write(&path, &text).unwrap();
            let loaded =
                portcullis::Config::load(&path).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
            let shutdown = CancellationToken::new();
            let token = shutdown.clone();
            let clock = clock.clone();
            let task = tokio::spawn(async move {
                match clock {
                    Some(clock) => portcullis::run_with_clock(loaded, clock, token).await,
                    None => portcullis::run(loaded, token).await,
                }
            });
            let mut proxy = Proxy {
                port,
                admin_port,
                dir,
                shutdown,
                task: Some(task),
                client: client.clone(),
            };
            match proxy.wait_ready().await {
                None => return proxy,
                Some(Err(portcullis::RunError::Bind { addr, .. })) if attempt < 5 => {
                    eprintln!("port {addr} was taken before the proxy bound it; trying others");
                    dir = std::mem::replace(&mut proxy.dir, tempfile::tempdir().unwrap());
                }
                Some(ended) => panic!("portcullis stopped before it was healthy: {ended:?}"),
            }
        }
        unreachable!()
    }

    /// The audit events written so far, parsed (a line still being written
    /// is left for the next look).
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `POST /admin/reload` with `token`: the status and body.
    pub async fn admin_reload(&self, token: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(format!("{}/admin/reload", self.admin_url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }

    /// `GET` an admin endpoint with `token`: the body (the status must be 200).
    pub async fn admin_get(&self, path: &str, token: &str) -> String {
        let r = self
            .client
            .get(format!("{}{path}", self.admin_url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.text().await.unwrap()
    }

    /// The config file this proxy runs with.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("portcullis.toml")
    }

    /// Waits until the admin listener answers `/healthz`: `None`, or how
    /// the proxy ended if it stopped first.
    async fn wait_ready(&mut self) -> Option<Result<(), portcullis::RunError>> {
        for _ in 0..200 {
            if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                return self.task.take()?.await.ok();
            }
            if let Ok(r) = self
                .client
                .get(format!("{}/healthz", self.admin_url()))
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                if r.status().is_success() {
                    return None;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("portcullis did not become healthy");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn cache_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("cache")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.try_get(path).await.unwrap()
    }

    /// GET that may fail before headers arrive (an aborted response).
    pub async fn try_get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        self.client
            .get(format!("{}{path}", self.url()))
            .send()
            .await
    }

    /// GET with the Accept header container runtimes send for manifests.
    pub async fn get_manifest(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url()))
            .header(
                "accept",
                format!(
                    "{}, {}, {}, {}",
                    image::OCI_INDEX,
                    image::OCI_MANIFEST,
                    image::DOCKER_LIST,
                    image::DOCKER_MANIFEST
                ),
            )
            .send()
            .await
            .unwrap()
    }

    /// GETs the manifest at `path`: the status and the denial reason, if any.
    pub async fn answer(&self, path: &str) -> (u16, Option<String>) {
        let r = self.get_manifest(path).await;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        (
            status,
            body["errors"][0]["detail"]["reason"]
                .as_str()
                .map(String::from),
        )
    }

    pub async fn head(&self, path: &str) -> reqwest::Response {
        self.client
            .head(format!("{}{path}", self.url()))
            .send()
            .await
            .unwrap()
    }

    /// Every sample on `/metrics`, keyed by `name{labels}` as printed.
    pub async fn metrics(&self) -> BTreeMap<String, f64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.admin_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    /// Waits until `n` more refreshes of `authority` have failed, so that
    /// every refresh that could still succeed has ended.
    pub async fn failed_refreshes(&self, authority: &str, n: f64) {
        let label = format!("authority=\"{authority}\"");
        let matching = [label.as_str(), "result=\"error\""];
        let count = || self.metric("portcullis_trust_refresh_total", &matching);
        let start = count().await;
        for _ in 0..100 {
            if count().await >= start + n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("fewer than {n} failed refreshes of {authority}");
    }

    /// Sum of all samples of `name` whose labels contain every `label="value"` in `matching`.
    pub async fn metric(&self, name: &str, matching: &[&str]) -> f64 {
        self.metrics()
            .await
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")) || *k == name)
            .filter(|(k, _)| matching.iter().all(|m| k.contains(m)))
            .map(|(_, v)| v)
            .sum()
    }

    /// Upstream requests of one kind sent so far.
    pub async fn upstream_requests(&self, kind: &str) -> f64 {
        self.metric(
            "portcullis_upstream_requests_total",
            &[&format!("kind=\"{kind}\"")],
        )
        .await
    }

    /// Stops, handing back the folder (config, cache) for a restart.
    pub async fn stop_keeping_dir(mut self) -> tempfile::TempDir {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        self.stop().await;
        dir
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(35), t).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}
