//! Real clients pulling through Portcullis: skopeo (path-prefix and bare
//! paths, as CRI-O/podman mirrors and Docker's registry-mirrors address it)
//! and containerd (`hosts.toml` with Portcullis as `server`, so requests
//! carry `?ns=<registry host>`), each pulling images whose layers are real
//! tar+gzip archives that containerd unpacks.

mod containerd;
mod skopeo;

use std::path::Path;

use crate::support::image::sha256;
use crate::support::runnable::{Flavour, Runnable, two_platform_index};
use crate::support::skopeo::dir_blob;
use crate::support::*;

fn config(name: &str, registry: &Registry) -> ProxyConfig {
    ProxyConfig::new()
        .upstream(name, &registry.url())
        .allow_all()
}

/// `name`'s `team/secret` is denied by policy; everything else is allowed.
fn config_denying_secret(name: &str, registry: &Registry) -> ProxyConfig {
    ProxyConfig::new()
        .upstream(name, &registry.url())
        .policy(Policy::deny("closed", &format!("{name}/team/secret")))
        .allow_all()
}

/// Pushes a two-platform index as `team/multi:v1`.
async fn push_index(
    registry: &Registry,
    seed: u64,
    flavour: Flavour,
) -> (Index, Runnable, Runnable) {
    let (index, amd64, arm64) = two_platform_index(seed, flavour);
    Pusher::new(&registry.url())
        .index("team/multi", "v1", &index)
        .await;
    (index, amd64, arm64)
}

/// The file at `path` holds exactly `blob`.
fn assert_blob_file(path: &Path, blob: &Blob) {
    let got = std::fs::read(path)
        .unwrap_or_else(|e| panic!("blob {} missing ({}): {e}", blob.digest, path.display()));
    assert_eq!(sha256(&got), blob.digest);
    assert_eq!(got, blob.bytes);
}

/// Every blob of `image` is in a `dir:` copy, byte for byte.
fn assert_dir_holds(dir: &Path, image: &Image) {
    for b in image.blobs() {
        assert_blob_file(&dir_blob(dir, &b.digest), b);
    }
}

/// Every request the client sent was answered 200: no 404 that a runtime
/// would treat as "try the next host", no 5xx it would retry.
async fn assert_all_answered_ok(proxy: &Proxy) {
    let others: Vec<(String, f64)> = proxy
        .metrics()
        .await
        .into_iter()
        .filter(|(k, v)| {
            k.starts_with("portcullis_requests_total{") && !k.contains("status=\"200\"") && *v > 0.0
        })
        .collect();
    assert!(others.is_empty(), "requests not answered 200: {others:?}");
}

/// The ids of the denials audited so far, waiting up to two seconds for
/// the writer to flush the first.
async fn denial_ids(proxy: &Proxy) -> Vec<String> {
    for _ in 0..40 {
        let ids: Vec<String> = proxy
            .audit_events()
            .iter()
            .filter(|e| e["event"] == "decision" && e["decision"] == "deny")
            .filter_map(|e| e["id"].as_str().map(str::to_string))
            .collect();
        if !ids.is_empty() {
            return ids;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no denial audited");
}

async fn request_count(proxy: &Proxy, endpoint: &str, status: &str) -> f64 {
    proxy
        .metric(
            "portcullis_requests_total",
            &[
                &format!("endpoint=\"{endpoint}\""),
                &format!("status=\"{status}\""),
            ],
        )
        .await
}
