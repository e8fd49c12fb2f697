//! Faults a real registry will not produce, from a scripted upstream:
//! nothing partial is cached, the client sees an error or an aborted
//! stream, and the next healthy request succeeds.

use std::time::{Duration, Instant};

use crate::support::image::{self, sha256};
use crate::support::scripted::{Fault, Scripted};
use crate::support::*;
use crate::support::{Image, Pusher, Registry};

async fn setup() -> (Scripted, Proxy) {
    setup_with("").await
}

/// As [`setup`], with extra `[cache]` keys.
async fn setup_with(cache_extra: &str) -> (Scripted, Proxy) {
    let upstream = Scripted::start().await;
    let config = ProxyConfig::new()
        .cache(cache_extra)
        .upstream_with(Upstream::new("s", &upstream.url()).timeouts("1s", "1s", "1s"))
        .allow_all();
    let proxy = Proxy::start(config).await;
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

/// A body that ends before its Content-Length is the upstream's fault,
/// counted as `truncated` (not as a failure to connect), and leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_blob_body_closed_short_of_its_content_length_counts_as_truncated_and_leaves_nothing() {
    let (upstream, proxy) = setup().await;
    let blob = image::random_bytes(76, 2_000_000);
    let digest = sha256(&blob);
    upstream.put(&digest, "application/octet-stream", &blob);
    upstream.set(Fault::CloseMidBody);
    let (truncated, connect) = (
        errors(&proxy, "truncated").await,
        errors(&proxy, "connect").await,
    );
    let path = format!("/v2/s/app/blobs/{digest}");
    if let Ok(r) = proxy.try_get(&path).await {
        assert!(read_all(r).await.is_err(), "a complete body was served");
    }
    assert!(tmp_is_empty(&proxy).await);
    assert!(!stored(&proxy, &digest));
    assert_eq!(errors(&proxy, "truncated").await - truncated, 1.0);
    assert_eq!(errors(&proxy, "connect").await - connect, 0.0);
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

/// Reads a blob response until it ends or passes `cap` bytes; `Err` when
/// the stream was aborted, `Ok(n)` with the bytes read otherwise.
async fn read_capped(mut r: reqwest::Response, cap: usize) -> Result<usize, reqwest::Error> {
    let mut n = 0;
    while let Some(chunk) = r.chunk().await? {
        n += chunk.len();
        if n > cap {
            break;
        }
    }
    Ok(n)
}

/// An upstream streaming a body that never ends, for a blob an allowed
/// manifest declares at 1 MiB: the fill stops at the first byte past the
/// declared size, keeps nothing and tells the client.
#[tokio::test(flavor = "multi_thread")]
async fn an_endless_blob_body_is_cut_at_the_size_its_manifest_declares_and_nothing_is_kept() {
    let (upstream, proxy) = setup().await;
    let img = Image::oci(43, &[1 << 20]);
    upstream.put(&img.digest, &img.media_type, &img.manifest);
    upstream.put(
        &img.config.digest,
        "application/octet-stream",
        &img.config.bytes,
    );
    let layer = &img.layers[0];
    upstream.endless(&layer.digest, None);
    let before = errors(&proxy, "bad_response").await;
    let manifest = proxy
        .get_manifest(&format!("/v2/s/app/manifests/{}", img.digest))
        .await;
    assert_eq!(manifest.status(), 200);
    let r = proxy
        .get(&format!("/v2/s/app/blobs/{}", layer.digest))
        .await;
    assert_eq!(r.status(), 200, "headers go out with the declared size");
    assert!(
        read_capped(r, 8 << 20).await.is_err(),
        "the client must see the stream abort"
    );
    assert!(tmp_is_empty(&proxy).await, "nothing partial is left");
    assert!(!stored(&proxy, &layer.digest));
    assert_eq!(errors(&proxy, "bad_response").await - before, 1.0);
    // Loopback socket buffers hold a few MiB; a fill that kept reading
    // would take the whole GiB.
    let sent = upstream.sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent < 16 << 20, "the upstream got {sent} bytes in");
}

/// With no declared size and no Content-Length, a fill takes at most
/// `cache.max_blob_bytes`.
#[tokio::test(flavor = "multi_thread")]
async fn an_endless_chunked_blob_nothing_declares_stops_at_max_blob_bytes() {
    let (upstream, proxy) = setup_with("max_blob_bytes = \"2MiB\"").await;
    let digest = sha256(b"never the real content");
    upstream.endless(&digest, None);
    if let Ok(r) = proxy.try_get(&format!("/v2/s/app/blobs/{digest}")).await {
        assert!(
            read_capped(r, 8 << 20).await.is_err(),
            "a body was served whole"
        );
    }
    assert!(tmp_is_empty(&proxy).await);
    assert!(!stored(&proxy, &digest));
    let sent = upstream.sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent < 16 << 20, "the upstream got {sent} bytes in");
}

/// A Content-Length that contradicts the manifest's declared size is
/// refused before any of the body is taken.
#[tokio::test(flavor = "multi_thread")]
async fn a_blob_whose_content_length_contradicts_its_declared_size_is_502_before_the_body() {
    let (upstream, proxy) = setup().await;
    let img = Image::oci(44, &[1 << 20]);
    upstream.put(&img.digest, &img.media_type, &img.manifest);
    let layer = &img.layers[0];
    upstream.endless(&layer.digest, Some(512 << 20));
    let manifest = proxy
        .get_manifest(&format!("/v2/s/app/manifests/{}", img.digest))
        .await;
    assert_eq!(manifest.status(), 200);
    let r = proxy
        .get(&format!("/v2/s/app/blobs/{}", layer.digest))
        .await;
    assert_eq!(r.status(), 502);
    assert!(tmp_is_empty(&proxy).await);
    let sent = upstream.sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent < 16 << 20, "the upstream got {sent} bytes in");
}

/// A repository that does not hold a blob does not get it by asking while
/// another repository of the same upstream is filling it.
#[tokio::test(flavor = "multi_thread")]
async fn a_repository_that_does_not_hold_a_blob_cannot_read_it_while_another_fills_it() {
    let (upstream, proxy) = setup().await;
    let blob = image::random_bytes(75, 300_000);
    let digest = sha256(&blob);
    upstream.put(&digest, "application/octet-stream", &blob);
    upstream.only_in(&digest, "a/app");
    upstream.delay(&digest, Duration::from_millis(800));
    let holder = {
        let (client, url) = (
            proxy.client.clone(),
            format!("{}/v2/s/a/app/blobs/{digest}", proxy.url()),
        );
        tokio::spawn(async move { client.get(url).send().await.unwrap().bytes().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = proxy.get(&format!("/v2/s/b/app/blobs/{digest}")).await;
    assert_eq!(other.status(), 404, "b/app does not hold the blob");
    let held = holder.await.unwrap().unwrap();
    assert!(held == blob, "the repository that holds it gets it");
}

/// A hostile upstream that trickles a popular layer does not stall the same
/// layer pulled through a healthy upstream (a real registry): fills are per
/// upstream.
#[tokio::test(flavor = "multi_thread")]
async fn a_layer_stalled_by_one_upstream_still_flows_at_once_through_another() {
    let hostile = Scripted::start().await;
    let registry = Registry::start().await;
    let img = Image::oci(46, &[400_000]);
    Pusher::new(&registry.url()).image("app", "v1", &img).await;
    let layer = &img.layers[0];
    hostile.put(&layer.digest, "application/octet-stream", &layer.bytes);
    hostile.delay(&layer.digest, Duration::from_secs(20));
    let config = ProxyConfig::new()
        .upstream_with(Upstream::new("hostile", &hostile.url()).timeouts("1s", "30s", "30s"))
        .upstream("trusted", &registry.url())
        .allow_all();
    let proxy = Proxy::start(config).await;
    let stalled = {
        let (client, url) = (
            proxy.client.clone(),
            format!("{}/v2/hostile/app/blobs/{}", proxy.url(), layer.digest),
        );
        tokio::spawn(async move { client.get(url).send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let r = proxy
        .get(&format!("/v2/trusted/app/blobs/{}", layer.digest))
        .await;
    assert_eq!(r.status(), 200);
    assert!(read_all(r).await.unwrap() == layer.bytes);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the healthy upstream's pull waited {:?}",
        started.elapsed()
    );
    stalled.abort();
}

/// A `Content-Length` larger than `cache.max_blob_bytes` is refused before
/// the body: the cap bounds every fill.
#[tokio::test(flavor = "multi_thread")]
async fn a_content_length_past_max_blob_bytes_is_refused_before_the_body() {
    let (upstream, proxy) = setup_with("max_blob_bytes = \"2MiB\"").await;
    let digest = sha256(b"never the real content either");
    upstream.endless(&digest, Some(256 << 20));
    let r = proxy.get(&format!("/v2/s/app/blobs/{digest}")).await;
    assert_eq!(r.status(), 502);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(tmp_is_empty(&proxy).await);
    let sent = upstream.sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent < 16 << 20, "the upstream got {sent} bytes in");
}
