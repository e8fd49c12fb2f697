//! What operators watch: a real Prometheus scraping Portcullis while
//! containerd pulls an allowed and a denied image, and metric label sets
//! that stay bounded whatever clients ask for.

use std::time::Duration;

use futures_util::StreamExt;

use crate::support::containerd::Containerd;
use crate::support::cosign::{self, VendorKey};
use crate::support::runnable::{Flavour, Runnable};
use crate::support::*;

/// `prometheus` scraping `target` every second, with its own storage and
/// a free port; killed on drop.
struct Prometheus {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: portcullis\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus must be installed (Debian package prometheus)");
        Prometheus {
            port,
            child,
            _dir: dir,
        }
    }

    /// The instant-query result vector for `query`.
    async fn query(&self, query: &str) -> Vec<serde_json::Value> {
        let r = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!(
                "http://127.0.0.1:{}/api/v1/query?query={}",
                self.port,
                percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC)
            ))
            .send()
            .await;
        match r {
            Ok(r) => {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                body["data"]["result"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Polls `query` until it returns something, for up to 60 s.
    async fn eventually(&self, query: &str) -> Vec<serde_json::Value> {
        for _ in 0..240 {
            let result = self.query(query).await;
            if !result.is_empty() {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("prometheus never answered {query}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_sees_a_containerd_denial_and_an_allowed_pull() {
    let registry = Registry::start().await;
    let acme = VendorKey::generate();
    let keys = tempfile::tempdir().unwrap();
    acme.write_public(keys.path(), "acme.pub");
    let acme_pub = format!("{}/acme.pub", keys.path().display());
    let config = ProxyConfig::new()
        .upstream("registry.test", &registry.url())
        .authority(Authority::keys("acme", &[&acme_pub]))
        .policy(Policy::signed_by("acme", "registry.test/**", &["acme"]));
    let pusher = Pusher::new(&registry.url());
    let app = Runnable::new(900, Flavour::Oci, "amd64");
    pusher.image("team/app", "v1", &app.image).await;
    pusher.image("team/unsigned", "v1", &app.image).await;
    cosign::push_signatures(
        &pusher,
        "team/app",
        &app.image.digest,
        &[acme.sign(&app.image.digest, "registry.test/team/app")],
    )
    .await;
    let proxy = Proxy::start(config).await;
    let prometheus = Prometheus::start(&format!("127.0.0.1:{}", proxy.admin_port)).await;
    prometheus.eventually("up{job=\"portcullis\"} == 1").await;

    let ctrd = Containerd::start().await;
    let hosts = ctrd
        .hosts_dir("registry.test", &proxy.url())
        .display()
        .to_string();
    let pull = |reference: &'static str| {
        let (hosts, ctrd) = (hosts.clone(), &ctrd);
        async move {
            ctrd.ctr(&[
                "images",
                "pull",
                "--hosts-dir",
                &hosts,
                "--snapshotter",
                ctrd.snapshotter,
                reference,
            ])
            .await
        }
    };
    let denied = pull("registry.test/team/unsigned:v1").await;
    assert!(!denied.status.success(), "an unsigned image must not pull");
    let allowed = pull("registry.test/team/app:v1").await;
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );

    let denials = prometheus
        .eventually("portcullis_denied_pulls_total{reason=\"unsigned\",policy=\"acme\"} > 0")
        .await;
    assert_eq!(denials[0]["metric"]["upstream"], "registry.test");
    let allows = prometheus
        .eventually("portcullis_pull_decisions_total{decision=\"allow\",policy=\"acme\"} > 0")
        .await;
    assert_eq!(allows[0]["metric"]["reason"], "none");
    let blobs = prometheus
        .eventually("sum(portcullis_blob_bytes_total) > 0")
        .await;
    assert!(!blobs.is_empty());
}

fn series(metrics_text: &str) -> usize {
    metrics_text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_distinct_repositories_do_not_grow_the_metric_series() {
    let registry = Registry::start().await;
    let config = ProxyConfig::new()
        .upstream("local", &registry.url())
        .policy(Policy::allow_unverified("only-acme", "local/acme/**"));
    let proxy = Proxy::start(config).await;
    let scrape = |proxy: &Proxy| {
        let url = format!("{}/metrics", proxy.admin_url());
        let client = proxy.client.clone();
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    // Warm up every label combination the flood can reach.
    for path in [
        "/v2/local/warm/x/manifests/v1",
        "/v2/local/warm/x/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "/v2/local/warm/x/tags/list",
    ] {
        proxy.get(path).await;
    }
    let before = series(&scrape(&proxy).await);
    let requests = futures_util::stream::iter(0..10_000u32)
        .map(|i| {
            let path = match i % 3 {
                0 => format!("/v2/local/flood/r{i}/manifests/t{i}"),
                1 => format!("/v2/local/flood/r{i}/blobs/sha256:{i:064x}"),
                _ => format!("/v2/local/flood/r{i}/tags/list"),
            };
            let proxy = &proxy;
            async move { proxy.get(&path).await.status().as_u16() }
        })
        .buffer_unordered(64)
        .collect::<Vec<u16>>()
        .await;
    let statuses: std::collections::BTreeSet<u16> = requests.into_iter().collect();
    assert!(
        statuses == [403].into(),
        "nothing under no policy is served: {statuses:?}"
    );
    let text = scrape(&proxy).await;
    assert_eq!(series(&text), before, "series grew:\n{text}");
    assert!(
        !text.contains("flood"),
        "a repository name leaked into a label"
    );
}

/// `portcullis why`, run as the binary against the proxy's config.
fn why(proxy: &Proxy, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("why")
        .args(args)
        .arg("--config")
        .arg(proxy.config_path())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn why_finds_the_decision_a_403_named_by_its_id_and_the_last_one_for_an_image() {
    let registry = Registry::start().await;
    let image = Image::oci(31, &[31]);
    Pusher::new(&registry.url())
        .image("team/secret", "v1", &image)
        .await;
    let proxy = Proxy::start(
        ProxyConfig::new()
            .upstream("local", &registry.url())
            .policy(Policy::deny("closed", "local/team/secret"))
            .allow_all(),
    )
    .await;
    let r = proxy
        .get_manifest("/v2/local/team/secret/manifests/v1")
        .await;
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    let id = body["errors"][0]["detail"]["decision_id"]
        .as_str()
        .expect("the 403 names its decision")
        .to_string();
    assert!(
        body["errors"][0]["message"].as_str().unwrap().contains(&id),
        "{body}"
    );
    for _ in 0..40 {
        if proxy.audit_events().iter().any(|e| e["id"] == id.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let by_id = why(&proxy, &[&id]);
    let text = String::from_utf8_lossy(&by_id.stdout);
    assert_eq!(by_id.status.code(), Some(0), "{text}");
    assert!(text.starts_with("local/team/secret:v1: deny\n"), "{text}");
    assert!(text.contains("policy      closed"), "{text}");
    assert!(text.contains(&format!("decision    {id}")), "{text}");

    let by_image = why(&proxy, &["--output", "json", "local/team/secret:v1"]);
    assert_eq!(by_image.status.code(), Some(0));
    let found: serde_json::Value = serde_json::from_slice(&by_image.stdout).unwrap();
    assert_eq!(found["last"]["id"], id.as_str());
    assert_eq!(found["last"]["decision"], "deny");
    assert_eq!(found["last"]["policy"], "closed");
    assert_eq!(found["decisions"], 1);
    assert_eq!(
        why(&proxy, &["local/team/secret"]).status.code(),
        Some(0),
        "no tag: any reference"
    );

    for other in [
        "local/team/secret:v2",
        "local/team/other:v1",
        "0123456789abcdef",
    ] {
        let none = why(&proxy, &[other]);
        assert_eq!(none.status.code(), Some(2), "{other}");
        assert!(
            String::from_utf8_lossy(&none.stderr).contains("no decision"),
            "{other}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_and_trust_status_during_a_live_blob_fill_lose_nothing_from_the_live_cache() {
    let registry = Registry::start().await;
    let image = Image::oci(41, &[3 << 20]);
    Pusher::new(&registry.url())
        .image("team/app", "v1", &image)
        .await;
    let slow = crate::support::throttle::Throttle::start(registry.port, 1 << 20).await;
    let proxy = Proxy::start(
        ProxyConfig::new()
            .upstream("local", &format!("http://127.0.0.1:{}", slow.port))
            .allow_all(),
    )
    .await;
    let r = proxy.get_manifest("/v2/local/team/app/manifests/v1").await;
    assert_eq!(r.status(), 200);
    let layer = &image.layers[0];
    let path = format!("/v2/local/team/app/blobs/{}", layer.digest);
    let fill = {
        let url = format!("{}{path}", proxy.url());
        tokio::spawn(async move { reqwest::get(url).await.unwrap().bytes().await.unwrap() })
    };
    let tmp = proxy.cache_dir().join("tmp");
    for _ in 0..100 {
        if std::fs::read_dir(&tmp).is_ok_and(|mut d| d.next().is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let filling: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!filling.is_empty(), "the fill is under way in tmp/");

    let config = proxy.config_path();
    let run = |args: &'static [&'static str]| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
                .args(args)
                .arg("--config")
                .arg(config)
                .output()
                .unwrap()
        })
    };
    let verified = run(&["verify", "local/team/app:v1"]).await.unwrap();
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let status = run(&["trust", "status"]).await.unwrap();
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    for f in &filling {
        assert!(
            f.exists(),
            "{} was removed from the live cache",
            f.display()
        );
    }

    assert_eq!(fill.await.unwrap(), layer.bytes);
    // The fill committed: the layer is served from the cache.
    let again = proxy.get(&path).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.bytes().await.unwrap(), layer.bytes);
    assert_eq!(proxy.upstream_requests("blob").await, 1.0);
}

/// Every decision line in `files`, parsed (each must be whole JSON).
fn decision_lines(files: &[std::path::PathBuf]) -> usize {
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .flat_map(|text| {
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a whole line"))
                .filter(|e| e["event"] == "decision")
                .collect::<Vec<_>>()
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_audit_log_renamed_by_logrotate_is_reopened_with_no_line_lost_or_split() {
    let proxy = Proxy::start(
        ProxyConfig::new()
            .upstream("local", "http://127.0.0.1:9")
            .policy(Policy::deny("closed", "local/**")),
    )
    .await;
    let audit = proxy.config_path().parent().unwrap().join("audit.jsonl");
    let rotated = audit.with_extension("jsonl.1");
    let pulls = |n: usize| {
        futures_util::future::join_all((0..n).map(|i| {
            let proxy = &proxy;
            async move {
                let r = proxy
                    .get_manifest(&format!("/v2/local/app{i}/manifests/v1"))
                    .await;
                assert_eq!(r.status(), 403);
            }
        }))
    };
    pulls(50).await;
    let (_, ()) = tokio::join!(pulls(50), async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        std::fs::rename(&audit, &rotated).unwrap();
    });
    pulls(50).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert!(audit.exists(), "a new audit file was opened");
    let after = decision_lines(std::slice::from_ref(&audit));
    assert!(
        after >= 50,
        "the pulls after the rotation went to the new file: {after}"
    );
    assert_eq!(decision_lines(&[audit, rotated]), 150, "no line lost");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_put_at_the_audit_path_is_not_followed() {
    let proxy = Proxy::start(
        ProxyConfig::new()
            .upstream("local", "http://127.0.0.1:9")
            .policy(Policy::deny("closed", "local/**")),
    )
    .await;
    let dir = proxy.config_path().parent().unwrap().to_path_buf();
    let audit = dir.join("audit.jsonl");
    let victim = dir.join("victim.json");
    std::fs::write(&victim, "{}").unwrap();
    assert_eq!(
        proxy
            .get_manifest("/v2/local/a/manifests/v1")
            .await
            .status(),
        403
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::rename(&audit, dir.join("audit.jsonl.1")).unwrap();
    std::os::unix::fs::symlink(&victim, &audit).unwrap();
    assert_eq!(
        proxy
            .get_manifest("/v2/local/b/manifests/v1")
            .await
            .status(),
        403
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "{}");
    assert_eq!(
        decision_lines(&[dir.join("audit.jsonl.1")]),
        2,
        "kept in the file open"
    );
}
