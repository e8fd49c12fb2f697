//! The OCI read API through Portcullis against a real distribution registry.

use crate::support::*;

fn config(registry: &Registry) -> String {
    format!("{}{}", upstream_toml("local", &registry.url(), ""), ALLOW_ALL)
}

#[tokio::test(flavor = "multi_thread")]
async fn single_arch_oci_image_pulls_byte_identical_and_second_pull_is_cached() {
    let registry = Registry::start().await;
    let image = Image::oci(1, &[1000, 300_000]);
    Pusher::new(&registry.url()).image("team/app", "v1", &image).await;
    let proxy = Proxy::start(&config(&registry), None).await;

    let r = proxy.get_manifest("/v2/local/team/app/manifests/v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], image.media_type.as_str());
    assert_eq!(r.headers()["docker-content-digest"], image.digest.as_str());
    assert_eq!(r.bytes().await.unwrap(), image.manifest);
    for b in image.blobs() {
        let r = proxy.get(&format!("/v2/local/team/app/blobs/{}", b.digest)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["docker-content-digest"], b.digest.as_str());
        assert_eq!(r.bytes().await.unwrap(), b.bytes);
    }

    let manifests_before = proxy.upstream_requests("manifest").await;
    let heads_before = proxy.upstream_requests("manifest_head").await;
    let blobs_before = proxy.upstream_requests("blob").await;
    let r = proxy.get_manifest("/v2/local/team/app/manifests/v1").await;
    assert_eq!(r.bytes().await.unwrap(), image.manifest);
    let r = proxy.get_manifest(&format!("/v2/local/team/app/manifests/{}", image.digest)).await;
    assert_eq!(r.bytes().await.unwrap(), image.manifest);
    for b in image.blobs() {
        let r = proxy.get(&format!("/v2/local/team/app/blobs/{}", b.digest)).await;
        assert_eq!(r.bytes().await.unwrap(), b.bytes);
    }
    assert_eq!(proxy.upstream_requests("manifest").await, manifests_before, "manifest served from cache");
    assert_eq!(proxy.upstream_requests("manifest_head").await, heads_before, "tag within tag_ttl not revalidated");
    assert_eq!(proxy.upstream_requests("blob").await, blobs_before, "blobs served from cache");
    assert!(proxy.metric("portcullis_blob_bytes_total", &["source=\"cache\""]).await >= 301_000.0);
}
