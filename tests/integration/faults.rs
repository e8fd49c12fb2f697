//! Faults a real registry will not produce, from a scripted upstream:
//! nothing partial is cached, the client sees an error or an aborted
//! stream, and the next healthy request succeeds.

use std::time::{Duration, Instant};

use crate::support::image::{self, sha256};
use crate::support::scripted::{Fault, Scripted};
use crate::support::*;

async fn setup() -> (Scripted, Proxy) {
    let upstream = Scripted::start().await;
    let body = format!(
        "[[upstream]]\nname = \"s\"\nurl = \"{}\"\ninsecure = true\nconnect_timeout = \"1s\"\nresponse_timeout = \"1s\"\nidle_timeout = \"1s\"\n{ALLOW_ALL}",
        upstream.url()
    );
    let proxy = Proxy::start(&body, None).await;
    (upstream, proxy)
}

fn stored(proxy: &Proxy, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    files_under(&proxy.cache_dir())
        .iter()
        .any(|p| p.file_name().is_some_and(|n| n == hex))
}

/// Whether the blob reaches the store within a few seconds: a verified blob
/// is published (synced, renamed) just after its last byte is served.
async fn eventually_stored(proxy: &Proxy, digest: &str) -> bool {
    for _ in 0..250 {
        if stored(proxy, digest) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn tmp_is_empty(proxy: &Proxy) -> bool {
    for _ in 0..50 {
        if files_under(&proxy.cache_dir().join("tmp")).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Reads a blob response to the end; `Err` when the stream was aborted.
async fn read_all(mut r: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = r.chunk().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn errors(proxy: &Proxy, kind: &str) -> f64 {
    proxy
        .metric(
            "portcullis_upstream_errors_total",
            &[&format!("kind=\"{kind}\"")],
        )
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_bytes_that_do_not_match_the_digest_are_502_and_not_cached() {
    let (upstream, proxy) = setup().await;
    let image = Image::oci(70, &[10]);
    upstream.put(&image.digest, image::OCI_MANIFEST, &image.manifest);
    upstream.set(Fault::WrongBytes);
    let path = format!("/v2/s/app/manifests/{}", image.digest);
    let r = proxy.get_manifest(&path).await;
    assert_eq!(r.status(), 502);
    assert_eq!(errors(&proxy, "digest_mismatch").await, 1.0);
    assert!(!stored(&proxy, &image.digest));
    upstream.set(Fault::Healthy);
    let r = proxy.get_manifest(&path).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), image.manifest);
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_with_wrong_bytes_aborts_the_stream_and_is_not_stored() {
    let (upstream, proxy) = setup().await;
    let blob = image::random_bytes(71, 600_000);
    let digest = sha256(&blob);
    upstream.put(&digest, "application/octet-stream", &blob);
    upstream.set(Fault::WrongBytes);
    let path = format!("/v2/s/app/blobs/{digest}");
    if let Ok(r) = proxy.try_get(&path).await {
        assert!(
            read_all(r).await.is_err(),
            "the client must not see a clean end of a wrong blob"
        );
    }
    assert!(tmp_is_empty(&proxy).await);
    assert!(!stored(&proxy, &digest));
    assert_eq!(errors(&proxy, "digest_mismatch").await, 1.0);
    upstream.set(Fault::Healthy);
    assert!(read_all(proxy.get(&path).await).await.unwrap() == blob);
    assert!(
        eventually_stored(&proxy, &digest).await,
        "stored once the digest matched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_reset_mid_blob_aborts_the_client_and_leaves_nothing_behind() {
    let (upstream, proxy) = setup().await;
    let blob = image::random_bytes(72, 2_000_000);
    let digest = sha256(&blob);
    upstream.put(&digest, "application/octet-stream", &blob);
    upstream.set(Fault::ResetMidBody);
    let path = format!("/v2/s/app/blobs/{digest}");
    // The abort reaches the client before or after the response headers.
    if let Ok(r) = proxy.try_get(&path).await {
        assert!(read_all(r).await.is_err(), "a complete body was served");
    }
    assert!(tmp_is_empty(&proxy).await);
    assert!(!stored(&proxy, &digest));
    upstream.set(Fault::Healthy);
    assert!(read_all(proxy.get(&path).await).await.unwrap() == blob);
}

#[tokio::test(flavor = "multi_thread")]
async fn hanging_upstream_is_504_within_the_response_timeout() {
    let (upstream, proxy) = setup().await;
    let image = Image::oci(73, &[10]);
    upstream.put(&image.digest, image::OCI_MANIFEST, &image.manifest);
    upstream.set(Fault::HangBeforeHeaders);
    let started = Instant::now();
    let r = proxy
        .get_manifest(&format!("/v2/s/app/manifests/{}", image.digest))
        .await;
    assert_eq!(r.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(errors(&proxy, "timeout").await, 1.0);
    upstream.set(Fault::Healthy);
    assert_eq!(
        proxy
            .get_manifest(&format!("/v2/s/app/manifests/{}", image.digest))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_blob_body_is_aborted_after_the_idle_timeout() {
    let (upstream, proxy) = setup().await;
    let blob = image::random_bytes(74, 1_000_000);
    let digest = sha256(&blob);
    upstream.put(&digest, "application/octet-stream", &blob);
    upstream.set(Fault::StallBody);
    let started = Instant::now();
    if let Ok(r) = proxy.try_get(&format!("/v2/s/app/blobs/{digest}")).await {
        assert!(
            read_all(r).await.is_err(),
            "a stalled body must not end cleanly"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    assert!(tmp_is_empty(&proxy).await);
    assert!(!stored(&proxy, &digest));
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_upstream_is_503_with_retry_after_and_nothing_cached() {
    let (upstream, proxy) = setup().await;
    let image = Image::oci(75, &[10]);
    upstream.put(&image.digest, image::OCI_MANIFEST, &image.manifest);
    upstream.set(Fault::TooManyRequests);
    let r = proxy
        .get_manifest(&format!("/v2/s/app/manifests/{}", image.digest))
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(errors(&proxy, "rate_limited").await, 1.0);
    assert!(!stored(&proxy, &image.digest));
    upstream.set(Fault::Healthy);
    assert_eq!(
        proxy
            .get_manifest(&format!("/v2/s/app/manifests/{}", image.digest))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lying_docker_content_digest_on_a_tag_is_502() {
    let (upstream, proxy) = setup().await;
    let image = Image::oci(76, &[10]);
    // The tag answers with bytes whose hash is not the digest it claims.
    upstream.put("v1", image::OCI_MANIFEST, &image.manifest);
    upstream.set(Fault::WrongBytes);
    let r = proxy.get_manifest("/v2/s/app/manifests/v1").await;
    assert!(
        r.status() == 502 || r.status() == 404,
        "status {}",
        r.status()
    );
    assert!(!stored(&proxy, &image.digest));
}
