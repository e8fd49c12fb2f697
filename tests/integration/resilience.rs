//! Concurrency and availability against a real registry: one upstream fetch
//! for many identical requests, and serving from cache while the upstream
//! is down.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portcullis::clock::ManualClock;

use crate::support::*;

/// A clock that moves only when a test says so.
fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(SystemTime::now()))
}

fn config(registry: &Registry) -> ProxyConfig {
    ProxyConfig::new()
        .upstream("local", &registry.url())
        .allow_all()
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_concurrent_pulls_of_one_uncached_blob_and_tagged_manifest_fetch_each_once() {
    let registry = Registry::start().await;
    let image = Image::oci(60, &[3 << 20]);
    Pusher::new(&registry.url())
        .image("c/app", "v1", &image)
        .await;
    let proxy = Arc::new(Proxy::start(config(&registry)).await);

    let mut tasks = Vec::new();
    for _ in 0..100 {
        let p = Arc::clone(&proxy);
        tasks.push(tokio::spawn(async move {
            p.get_manifest("/v2/local/c/app/manifests/v1")
                .await
                .bytes()
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), image.manifest);
    }
    // A tag never seen is resolved by the one GET that brings its bytes.
    assert_eq!(
        proxy.upstream_requests("manifest_head").await,
        0.0,
        "no separate tag resolution"
    );
    assert_eq!(
        proxy.upstream_requests("manifest").await,
        1.0,
        "one manifest fetch"
    );

    let layer = image.layers[0].clone();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let p = Arc::clone(&proxy);
        let d = layer.digest.clone();
        tasks.push(tokio::spawn(async move {
            p.get(&format!("/v2/local/c/app/blobs/{d}"))
                .await
                .bytes()
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert!(
            t.await.unwrap() == layer.bytes,
            "every client got the exact blob"
        );
    }
    assert_eq!(
        proxy.upstream_requests("blob").await,
        1.0,
        "one blob fetch for 100 clients"
    );

    let other = Image::oci(61, &[10]);
    Pusher::new(&registry.url())
        .image("c/other", "v1", &other)
        .await;
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let p = Arc::clone(&proxy);
        let d = other.digest.clone();
        tasks.push(tokio::spawn(async move {
            p.get_manifest(&format!("/v2/local/c/other/manifests/{d}"))
                .await
                .bytes()
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), other.manifest);
    }
    assert_eq!(
        proxy.upstream_requests("manifest").await,
        2.0,
        "one more fetch for 100 by-digest requests"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_does_not_fail_another_reading_the_same_fill() {
    let registry = Registry::start().await;
    let image = Image::oci(62, &[16 << 20]);
    Pusher::new(&registry.url())
        .image("c/app", "v1", &image)
        .await;
    let proxy = Proxy::start(config(&registry)).await;
    let url = format!(
        "{}/v2/local/c/app/blobs/{}",
        proxy.url(),
        image.layers[0].digest
    );
    let mut quitter = proxy.client.get(&url).send().await.unwrap();
    let _ = quitter.chunk().await.unwrap();
    let stayer = proxy.client.get(&url).send().await.unwrap();
    drop(quitter);
    assert!(stayer.bytes().await.unwrap() == image.layers[0].bytes);
    assert_eq!(proxy.upstream_requests("blob").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_serves_verified_tags_until_max_stale_and_digests_from_cache() {
    let registry = Registry::start().await;
    let image = Image::oci(63, &[1000]);
    Pusher::new(&registry.url())
        .image("c/app", "v1", &image)
        .await;
    let clock = manual_clock();
    let cache = |max_stale| format!("tag_ttl = \"5m\"\nmax_stale = \"{max_stale}\"");
    let proxy = Proxy::start(config(&registry).clock(&clock).cache(&cache("1h"))).await;
    let short = Proxy::start(config(&registry).clock(&clock).cache(&cache("10m"))).await;
    for p in [&proxy, &short] {
        assert_eq!(
            p.get_manifest("/v2/local/c/app/manifests/v1")
                .await
                .status(),
            200
        );
        let r = p
            .get(&format!("/v2/local/c/app/blobs/{}", image.layers[0].digest))
            .await;
        assert_eq!(r.bytes().await.unwrap(), image.layers[0].bytes);
    }
    drop(registry);
    clock.advance(Duration::from_secs(11 * 60));

    let r = proxy.get_manifest("/v2/local/c/app/manifests/v1").await;
    assert_eq!(
        r.status(),
        200,
        "verified mapping served past tag_ttl while the upstream is down"
    );
    assert_eq!(r.headers()["docker-content-digest"], image.digest.as_str());
    assert_eq!(
        r.headers()["warning"],
        "110 - \"portcullis: upstream unavailable; tag last checked 660s ago\"",
        "a stale answer says so"
    );
    assert_eq!(
        proxy.metric("portcullis_stale_served_total", &[]).await,
        1.0
    );
    let r = proxy
        .get_manifest(&format!("/v2/local/c/app/manifests/{}", image.digest))
        .await;
    assert!(
        r.headers().get("warning").is_none(),
        "a digest is never stale"
    );
    assert_eq!(r.bytes().await.unwrap(), image.manifest);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let marked: Vec<_> = proxy
        .audit_events()
        .into_iter()
        .filter(|e| e["event"] == "decision" && e["reference"] == "v1")
        .map(|e| e["served_stale_seconds"].clone())
        .collect();
    assert_eq!(marked, [serde_json::Value::Null, serde_json::json!(660)]);
    let r = proxy
        .get(&format!("/v2/local/c/app/blobs/{}", image.layers[0].digest))
        .await;
    assert_eq!(r.bytes().await.unwrap(), image.layers[0].bytes);

    let r = short.get_manifest("/v2/local/c/app/manifests/v1").await;
    assert_eq!(
        r.status(),
        503,
        "past max_stale the tag is unavailable, not guessed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_404_for_a_cached_tag_is_authoritative() {
    let registry = Registry::start().await;
    let image = Image::oci(64, &[10]);
    let pusher = Pusher::new(&registry.url());
    pusher.image("c/app", "v1", &image).await;
    let clock = manual_clock();
    let proxy = Proxy::start(config(&registry).clock(&clock).cache("tag_ttl = \"5m\"")).await;
    assert_eq!(
        proxy
            .get_manifest("/v2/local/c/app/manifests/v1")
            .await
            .status(),
        200
    );
    let r = proxy
        .client
        .delete(format!(
            "{}/v2/c/app/manifests/{}",
            registry.url(),
            image.digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    clock.advance(Duration::from_secs(5 * 60));
    let r = proxy.get_manifest("/v2/local/c/app/manifests/v1").await;
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_tag_is_revalidated_with_a_head_and_follows_a_moved_tag() {
    let registry = Registry::start().await;
    let (first, second) = (Image::oci(65, &[10]), Image::oci(66, &[10]));
    let pusher = Pusher::new(&registry.url());
    pusher.image("c/app", "v1", &first).await;
    let clock = manual_clock();
    let proxy = Proxy::start(config(&registry).clock(&clock).cache("tag_ttl = \"5m\"")).await;
    let path = "/v2/local/c/app/manifests/v1";
    assert_eq!(
        proxy.get_manifest(path).await.bytes().await.unwrap(),
        first.manifest
    );
    let (gets, heads) = (
        proxy.upstream_requests("manifest").await,
        proxy.upstream_requests("manifest_head").await,
    );
    clock.advance(Duration::from_secs(5 * 60));
    assert_eq!(
        proxy.get_manifest(path).await.bytes().await.unwrap(),
        first.manifest
    );
    assert_eq!(proxy.upstream_requests("manifest_head").await, heads + 1.0);
    assert_eq!(
        proxy.upstream_requests("manifest").await,
        gets,
        "unchanged tag: bytes from the cache"
    );

    pusher.image("c/app", "v1", &second).await;
    clock.advance(Duration::from_secs(5 * 60));
    assert_eq!(
        proxy.get_manifest(path).await.bytes().await.unwrap(),
        second.manifest,
        "a moved tag is followed"
    );
    assert_eq!(proxy.upstream_requests("manifest_head").await, heads + 2.0);
}
